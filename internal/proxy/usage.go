package proxy

import "github.com/llmproxy/llm-proxy/internal/proxy/jsonscan"

// usageAcc merges usage objects seen along a response: each field takes the
// latest value reported (Anthropic's message_delta counts are cumulative and
// supersede message_start's).
type usageAcc struct {
	prompt, completion, total, cacheCreation, cacheRead int
	hasPrompt, hasCompletion, hasTotal                  bool
}

func (a *usageAcc) merge(u jsonscan.Usage) {
	set := func(dst *int, has *bool, counts ...jsonscan.Count) {
		for _, c := range counts {
			if c.Valid {
				*dst = c.N
				if has != nil {
					*has = true
				}
			}
		}
	}
	set(&a.prompt, &a.hasPrompt, u.PromptTokens, u.InputTokens)
	set(&a.completion, &a.hasCompletion, u.CompletionTokens, u.OutputTokens)
	set(&a.total, &a.hasTotal, u.TotalTokens)
	set(&a.cacheCreation, nil, u.CacheCreationInputTokens)
	set(&a.cacheRead, nil, u.CacheReadInputTokens)
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
	head   []byte  // the first headCap bytes
	tail   []byte  // at least the last tailCap bytes, at most 2*tailCap
	answer *Answer // the whole body, for memory capture; nil without
}

func (c *capture) write(p []byte) {
	if c.answer != nil {
		c.answer.add(p)
	}
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
	if u, ok := jsonscan.LastUsage(c.tail); ok {
		acc.merge(u)
	}
	model := jsonscan.String(c.head, jsonscan.FirstKey(c.head, `"model"`))
	if model == "" {
		model = jsonscan.String(c.tail, jsonscan.LastKey(c.tail, `"model"`))
	}
	return acc.usage(), model
}
