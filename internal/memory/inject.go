package memory

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/llmproxy/llm-proxy/internal/proxy/jsonscan"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// contextHeader opens the injected message, so the model (and a person
// reading a trace) can tell it from the client's own messages.
const contextHeader = "[ProxyMem] Context from earlier sessions of this user in this project, " +
	"summarised by the gateway. It may be out of date; prefer what the current conversation says.\n"

// maxContextBytes bounds the injected text.
const maxContextBytes = 16 << 10

// recencyHalfLife is how fast a summary's recency score halves.
const recencyHalfLife = 7 * 24 * time.Hour

// scored is a candidate summary and its relevance.
type scored struct {
	sum   *store.SessionSummary
	score float64
}

// rank scores candidates against the prompt: recency (1 for now, halving
// every week) + keyword overlap (the share of the prompt's keywords the
// summary mentions, weighted double) + 0.25 for open remaining tasks. It
// returns at most n with a score of at least minScore, best first.
func rank(cands []*store.SessionSummary, prompt string, now time.Time, n int, minScore float64) []*store.SessionSummary {
	words := keywords(prompt)
	var out []scored
	for _, c := range cands {
		age := max(now.Sub(c.CreatedAt), 0)
		score := math.Exp2(-float64(age) / float64(recencyHalfLife))
		if len(words) > 0 {
			have := keywords(strings.Join([]string{c.Title, c.Scope, c.Goals, c.KeyDecisions, c.TouchedFiles,
				c.Errors, c.RemainingTasks}, " "))
			hits := 0
			for w := range words {
				if _, ok := have[w]; ok {
					hits++
				}
			}
			score += 2 * float64(hits) / float64(len(words))
		}
		if strings.TrimSpace(c.RemainingTasks) != "" {
			score += 0.25
		}
		if score >= minScore {
			out = append(out, scored{c, score})
		}
	}
	slices.SortStableFunc(out, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return b.sum.CreatedAt.Compare(a.sum.CreatedAt)
	})
	sums := make([]*store.SessionSummary, 0, min(n, len(out)))
	for i := 0; i < len(out) && i < n; i++ {
		sums = append(sums, out[i].sum)
	}
	return sums
}

// maxKeywords bounds the words read from a prompt.
const maxKeywords = 256

// keywords returns the distinct lower-case words of s of three or more
// letters or digits (path parts and identifiers split at punctuation),
// minus common English words.
func keywords(s string) map[string]struct{} {
	out := map[string]struct{}{}
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		if len(w) < 3 || stopWords[w] {
			continue
		}
		out[w] = struct{}{}
		if len(out) == maxKeywords {
			break
		}
	}
	return out
}

var stopWords = map[string]bool{"the": true, "and": true, "for": true, "that": true, "this": true, "with": true,
	"you": true, "are": true, "not": true, "but": true, "have": true, "was": true, "from": true, "can": true,
	"all": true, "please": true, "what": true, "when": true, "how": true, "into": true, "use": true, "its": true,
	"then": true, "now": true, "let": true, "our": true, "will": true, "should": true, "would": true}

// renderContext writes the injected text for sums, bounded by
// maxContextBytes.
func renderContext(sums []*store.SessionSummary) string {
	var b strings.Builder
	b.WriteString(contextHeader)
	for _, s := range sums {
		var e strings.Builder
		e.WriteString("\n## " + oneLine(s.Title) + " (session " + oneLine(s.SessionID) + ", " +
			s.CreatedAt.UTC().Format(time.DateOnly))
		if s.CompletionStatus != "" {
			e.WriteString(", " + oneLine(s.CompletionStatus))
		}
		e.WriteString(")\n")
		for _, f := range []struct{ name, v string }{
			{"Scope", s.Scope}, {"Goals", s.Goals}, {"Key decisions", s.KeyDecisions},
			{"Touched files", s.TouchedFiles}, {"Tests run", s.TestsRun}, {"Errors", s.Errors},
			{"Remaining tasks", s.RemainingTasks},
		} {
			if v := strings.TrimSpace(f.v); v != "" {
				e.WriteString(f.name + ": " + strings.ReplaceAll(v, "\n", "; ") + "\n")
			}
		}
		if b.Len()+e.Len() > maxContextBytes {
			break
		}
		b.WriteString(e.String())
	}
	return b.String()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// lastUserText returns the text of a chat request's last user message, the
// prompt summaries are matched against.
func lastUserText(body []byte) string {
	msgs, _ := requestMessages(body)
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return msgs[i].Content
		}
	}
	return ""
}

// errNoMessages: the body has no messages array to add the context to.
var errNoMessages = errors.New("no messages array")

// injectOpenAI returns body with a system message holding text inserted
// after the leading system (and developer) messages; every other byte is
// kept.
func injectOpenAI(body []byte, text string) ([]byte, error) {
	s, e, found, err := jsonscan.Member(body, "messages")
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errNoMessages
	}
	arr := body[s:e]
	elems, ok := jsonscan.Elements(arr)
	if !ok {
		return nil, errNoMessages
	}
	msg, err := json.Marshal(Message{Role: "system", Content: text})
	if err != nil {
		return nil, err
	}
	// Insert before the first message that is not a system message.
	at := len(elems)
	for i, el := range elems {
		var m struct {
			Role string `json:"role"`
		}
		if json.Unmarshal(arr[el[0]:el[1]], &m) != nil || (m.Role != "system" && m.Role != "developer") {
			at = i
			break
		}
	}
	switch {
	case len(elems) == 0:
		open := bytes.IndexByte(arr, '[')
		return jsonscan.Splice(body, s+open+1, s+open+1, string(msg)), nil
	case at == len(elems):
		end := s + elems[at-1][1]
		return jsonscan.Splice(body, end, end, ",", string(msg)), nil
	default:
		pos := s + elems[at][0]
		return jsonscan.Splice(body, pos, pos, string(msg), ","), nil
	}
}

// injectAnthropic returns body with text added to the system prompt: as a
// "system" string when there is none, appended to a string system prompt
// after a blank line, or as a last text block of a block array.
func injectAnthropic(body []byte, text string) ([]byte, error) {
	s, e, found, err := jsonscan.Member(body, "system")
	if err != nil {
		return nil, err
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	if !found {
		open := bytes.IndexByte(body, '{')
		rest := bytes.TrimLeft(body[open+1:], " \t\r\n")
		sep := ","
		if len(rest) > 0 && rest[0] == '}' {
			sep = ""
		}
		return jsonscan.Splice(body, open+1, open+1, `"system":`, enc(text), sep), nil
	}
	v := body[s:e]
	switch v[0] {
	case 'n': // null
		return jsonscan.Splice(body, s, e, enc(text)), nil
	case '"':
		var cur string
		if err := json.Unmarshal(v, &cur); err != nil {
			return nil, err
		}
		return jsonscan.Splice(body, s, e, enc(cur+"\n\n"+text)), nil
	case '[':
		elems, ok := jsonscan.Elements(v)
		if !ok {
			return nil, errors.New("system is not a valid array")
		}
		blk := enc(map[string]string{"type": "text", "text": text})
		if len(elems) == 0 {
			return jsonscan.Splice(body, s, e, "["+blk+"]"), nil
		}
		end := s + elems[len(elems)-1][1]
		return jsonscan.Splice(body, end, end, ",", blk), nil
	}
	return nil, errors.New("system is neither a string nor an array")
}
