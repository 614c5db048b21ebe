package jsonscan

// Usage is one usage object as OpenAI (chat, embeddings, responses) and
// Anthropic send it.
type Usage struct {
	PromptTokens, CompletionTokens, TotalTokens    Count // OpenAI
	InputTokens, OutputTokens                      Count // Anthropic, OpenAI responses
	CacheCreationInputTokens, CacheReadInputTokens Count // Anthropic
}

// Count is one token count of a usage object; Valid is false when it was
// absent or null.
type Count struct {
	N     int
	Valid bool
}

// count returns the count of u that the key name holds, or nil.
func (u *Usage) count(name []byte) *Count {
	switch string(name) {
	case "prompt_tokens":
		return &u.PromptTokens
	case "completion_tokens":
		return &u.CompletionTokens
	case "total_tokens":
		return &u.TotalTokens
	case "input_tokens":
		return &u.InputTokens
	case "output_tokens":
		return &u.OutputTokens
	case "cache_creation_input_tokens":
		return &u.CacheCreationInputTokens
	case "cache_read_input_tokens":
		return &u.CacheReadInputTokens
	}
	return nil
}

// LastUsage finds the last `"usage":` in b whose value is a usage object the
// proxy can trust, and decodes it: an object holding a prompt, completion,
// total, input or output count, where every count is a non-negative integer
// or null. Like FirstKey, it matches the key as written.
func LastUsage(b []byte) (u Usage, found bool) {
	const quoted = `"usage"`
	lastMatch(b, quoted, func(q int) bool {
		if v := keyValue(b, q, quoted); v >= 0 && b[v] == '{' {
			if ve := valueEnd(b, v); ve > 0 {
				u, found = decodeUsage(b[v:ve])
				found = found && (u.PromptTokens.Valid || u.CompletionTokens.Valid || u.TotalTokens.Valid ||
					u.InputTokens.Valid || u.OutputTokens.Valid)
			}
		}
		return found
	})
	return u, found
}

// decodeUsage reads the token counts of the usage object obj. ok is false
// when obj is not an object or a count is not a non-negative integer (or
// null).
func decodeUsage(obj []byte) (u Usage, ok bool) {
	valid := true
	walked := eachMember(obj, func(name []byte, vs, ve int) bool {
		c := u.count(name)
		if c == nil || string(obj[vs:ve]) == "null" {
			return true
		}
		n, isInt := parseCount(obj[vs:ve])
		if !isInt {
			valid = false
			return false
		}
		*c = Count{n, true}
		return true
	})
	return u, walked && valid
}

// parseCount parses a non-negative decimal integer of at most 18 digits.
func parseCount(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
