package proxy

// wireUsage is a usage object as OpenAI (chat, embeddings, responses) and
// Anthropic send it; absent fields stay nil.
type wireUsage struct {
	PromptTokens     *int `json:"prompt_tokens"`
	CompletionTokens *int `json:"completion_tokens"`
	TotalTokens      *int `json:"total_tokens"`
	InputTokens      *int `json:"input_tokens"`
	OutputTokens     *int `json:"output_tokens"`
	CacheCreation    *int `json:"cache_creation_input_tokens"`
	CacheRead        *int `json:"cache_read_input_tokens"`
}

func (u wireUsage) any() bool {
	return u.PromptTokens != nil || u.CompletionTokens != nil || u.TotalTokens != nil ||
		u.InputTokens != nil || u.OutputTokens != nil
}

// usageAcc merges usage objects seen along a response: each field takes the
// latest value reported (Anthropic's message_delta counts are cumulative and
// supersede message_start's).
type usageAcc struct {
	prompt, completion, total, cacheCreation, cacheRead int
	hasPrompt, hasCompletion, hasTotal                  bool
}

func (a *usageAcc) merge(u wireUsage) {
	set := func(dst *int, has *bool, ps ...*int) {
		for _, p := range ps {
			if p != nil {
				*dst = *p
				if has != nil {
					*has = true
				}
			}
		}
	}
	set(&a.prompt, &a.hasPrompt, u.PromptTokens, u.InputTokens)
	set(&a.completion, &a.hasCompletion, u.CompletionTokens, u.OutputTokens)
	set(&a.total, &a.hasTotal, u.TotalTokens)
	set(&a.cacheCreation, nil, u.CacheCreation)
	set(&a.cacheRead, nil, u.CacheRead)
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
