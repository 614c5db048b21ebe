package proxy

// Fields of a usage object as OpenAI (chat, embeddings, responses) and
// Anthropic send it.
const (
	fieldPrompt = iota
	fieldCompletion
	fieldTotal
	fieldInput
	fieldOutput
	fieldCacheCreation
	fieldCacheRead
	numFields
)

var usageFields = map[string]int{
	"prompt_tokens": fieldPrompt, "completion_tokens": fieldCompletion, "total_tokens": fieldTotal,
	"input_tokens": fieldInput, "output_tokens": fieldOutput,
	"cache_creation_input_tokens": fieldCacheCreation, "cache_read_input_tokens": fieldCacheRead,
}

// wireUsage is one usage object: the value of each field and whether it
// was there (absent and null fields are not).
type wireUsage struct {
	n   [numFields]int
	has [numFields]bool
}

func (u wireUsage) any() bool {
	return u.has[fieldPrompt] || u.has[fieldCompletion] || u.has[fieldTotal] || u.has[fieldInput] || u.has[fieldOutput]
}

// decodeUsage reads the token counts of the usage object obj. ok is false
// when obj is not an object or a count is not a non-negative integer (or
// null): such an object is not usage the proxy can trust.
func decodeUsage(obj []byte) (u wireUsage, ok bool) {
	valid := true
	walked := eachMember(obj, func(name []byte, vs, ve int) bool {
		f, known := usageFields[string(name)]
		if !known || string(obj[vs:ve]) == "null" {
			return true
		}
		n, isInt := parseCount(obj[vs:ve])
		if !isInt {
			valid = false
			return false
		}
		u.n[f], u.has[f] = n, true
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

// usageAcc merges usage objects seen along a response: each field takes the
// latest value reported (Anthropic's message_delta counts are cumulative and
// supersede message_start's).
type usageAcc struct {
	prompt, completion, total, cacheCreation, cacheRead int
	hasPrompt, hasCompletion, hasTotal                  bool
}

func (a *usageAcc) merge(u wireUsage) {
	set := func(dst *int, has *bool, fields ...int) {
		for _, f := range fields {
			if u.has[f] {
				*dst = u.n[f]
				if has != nil {
					*has = true
				}
			}
		}
	}
	set(&a.prompt, &a.hasPrompt, fieldPrompt, fieldInput)
	set(&a.completion, &a.hasCompletion, fieldCompletion, fieldOutput)
	set(&a.total, &a.hasTotal, fieldTotal)
	set(&a.cacheCreation, nil, fieldCacheCreation)
	set(&a.cacheRead, nil, fieldCacheRead)
}

// usage returns the reported usage; TotalTokens is computed when missing.
func (a *usageAcc) usage() Usage {
	u := Usage{PromptTokens: a.prompt + a.cacheCreation + a.cacheRead, CompletionTokens: a.completion}
	if a.hasTotal && a.cacheCreation+a.cacheRead == 0 {
		u.TotalTokens = a.total
	} else {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u
}

// capture keeps the start and the end of a JSON response body: the model is
// near the start (chat, Anthropic) or the end (embeddings), the usage object
// near the end.
type capture struct {
	head []byte // the first headCap bytes
	tail []byte // at least the last tailCap bytes, at most 2*tailCap
}

func (c *capture) write(p []byte) {
	if room := headCap - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, len(p))]...)
	}
	if len(p) >= tailCap {
		c.tail = append(c.tail[:0], p[len(p)-tailCap:]...)
		return
	}
	if len(c.tail)+len(p) > 2*tailCap {
		keep := tailCap - len(p)
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-keep:]...)
	}
	c.tail = append(c.tail, p...)
}

// result extracts usage and model from the captured body.
func (c *capture) result() (Usage, string) {
	var acc usageAcc
	if u, ok := lastUsage(c.tail); ok {
		acc.merge(u)
	}
	model := stringValue(c.head, firstKey(c.head, `"model"`))
	if model == "" {
		model = stringValue(c.tail, lastKey(c.tail, `"model"`))
	}
	return acc.usage(), model
}
