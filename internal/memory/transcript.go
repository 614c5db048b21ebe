package memory

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/llmproxy/llm-proxy/internal/proxy"
)

// Message is one turn of a stored transcript. The transcript is the JSON
// array of a session's last request's messages and its answer.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// maxToolArgs bounds the arguments kept of one tool call.
const maxToolArgs = 2000

// chatBody is what capture reads of an OpenAI chat or Anthropic messages
// request body.
type chatBody struct {
	System   json.RawMessage `json:"system"`
	Messages []chatMessage   `json:"messages"`
}

type chatMessage struct {
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	ToolCalls []struct {
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// block is a content block of either API.
type block struct {
	Type    string          `json:"type"`
	Text    string          `json:"text"`
	Name    string          `json:"name"`
	Input   json.RawMessage `json:"input"`
	Content json.RawMessage `json:"content"`
}

// requestMessages reads the messages of a chat request body (and an
// Anthropic top-level system prompt); malformed parts are skipped.
func requestMessages(body []byte) ([]Message, bool) {
	var req chatBody
	if json.Unmarshal(body, &req) != nil {
		return nil, false
	}
	var out []Message
	if s := contentText(req.System); s != "" {
		out = append(out, Message{Role: "system", Content: s})
	}
	for _, m := range req.Messages {
		text := contentText(m.Content)
		for _, tc := range m.ToolCalls {
			text = join(text, "[tool call "+tc.Function.Name+" "+clip(tc.Function.Arguments, maxToolArgs)+"]")
		}
		if text != "" {
			out = append(out, Message{Role: m.Role, Content: text})
		}
	}
	return out, true
}

// contentText flattens a message content: a string, or an array of text,
// tool-use and tool-result blocks (others show as their type).
func contentText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '[':
		var blocks []block
		if json.Unmarshal(raw, &blocks) != nil {
			return ""
		}
		var text string
		for _, b := range blocks {
			switch {
			case b.Text != "":
				text = join(text, b.Text)
			case b.Type == "tool_use":
				text = join(text, "[tool use "+b.Name+" "+clip(string(b.Input), maxToolArgs)+"]")
			case b.Type == "tool_result":
				text = join(text, "[tool result] "+contentText(b.Content))
			case b.Type != "":
				text = join(text, "["+b.Type+"]")
			}
		}
		return text
	}
	return ""
}

// answerText decodes what proxy.Answer collected.
func answerText(a *proxy.Answer) string {
	if a == nil {
		return ""
	}
	if a.Streamed {
		var s string
		if json.Unmarshal([]byte(`"`+string(a.Text)+`"`), &s) != nil {
			return ""
		}
		if a.Truncated {
			s += " [answer cut]"
		}
		return s
	}
	if a.Truncated {
		return "[answer too large to keep]"
	}
	var resp struct {
		Choices []struct {
			Message chatMessage `json:"message"`
		} `json:"choices"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(a.Text, &resp) != nil {
		return ""
	}
	if len(resp.Choices) > 0 {
		m := resp.Choices[0].Message
		text := contentText(m.Content)
		for _, tc := range m.ToolCalls {
			text = join(text, "[tool call "+tc.Function.Name+" "+clip(tc.Function.Arguments, maxToolArgs)+"]")
		}
		return text
	}
	return contentText(resp.Content)
}

// buildTranscript returns the transcript JSON of a request and its
// answer: redacted, and at most maxBytes long, oldest turns dropped first
// and the oldest kept turn cut from its start. Turns are chosen before
// redaction (dropped turns are never stored), and the kept ones are
// redacted whole before any cut, so a cut cannot split a secret out of
// the redactor's reach. ok is false when body is not a chat request.
func buildTranscript(body []byte, answer *proxy.Answer, red *Redactor, maxBytes int) (string, bool) {
	msgs, ok := requestMessages(body)
	if !ok {
		return "", false
	}
	if a := answerText(answer); a != "" {
		msgs = append(msgs, Message{Role: "assistant", Content: a})
	}
	// Keep the newest turns whose raw text fits, plus the one before them
	// (to be cut).
	first, size := len(msgs), 2
	for first > 0 && size < maxBytes {
		first--
		size += len(msgs[first].Content) + len(msgs[first].Role) + 30
	}
	msgs = msgs[first:]
	for i := range msgs {
		msgs[i].Content = red.Redact(msgs[i].Content)
	}
	for {
		out, err := json.Marshal(msgs)
		if err != nil {
			return "", false
		}
		over := len(out) - maxBytes
		if over <= 0 {
			return string(out), true
		}
		if len(msgs) > 1 && len(msgs[0].Content) <= over {
			msgs = msgs[1:]
			continue
		}
		if len(msgs[0].Content) <= over {
			return "[]", true // maxBytes is below one empty turn
		}
		// Escaping may make the JSON longer than the text: cut a little
		// more than needed and let the loop check again.
		msgs[0].Content = "… " + cutFront(msgs[0].Content, over+16)
	}
}

// cutFront drops at least n bytes from the start of s, on a rune boundary.
func cutFront(s string, n int) string {
	if n >= len(s) {
		return ""
	}
	for n < len(s) && !utf8.RuneStart(s[n]) {
		n++
	}
	return s[n:]
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return strings.Join([]string{a, b}, "\n")
}
