package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

// chatBody is a realistic ~4 KB streaming chat request: a system prompt, a
// few turns with escaped text, a tool definition and the usual options.
var chatBody = func() []byte {
	turn := strings.Repeat("Here is the \"report\" you asked for:\n- revenue grew 12%\n- costs fell 3%\n", 15)
	body := map[string]any{
		"model":       "gpt-4o-mini",
		"stream":      true,
		"temperature": 0.2,
		"max_tokens":  1024,
		"user":        "user-1234",
		"messages": []map[string]string{
			{"role": "system", "content": "You are a careful analyst. Answer in Markdown, cite the figures you use, and say when you are unsure."},
			{"role": "user", "content": turn},
			{"role": "assistant", "content": turn},
			{"role": "user", "content": turn + "Summarise the above in three bullet points."},
		},
		"tools": []map[string]any{{"type": "function", "function": map[string]any{
			"name": "lookup", "description": "Look a figure up in the ledger.",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"account": map[string]string{"type": "string"}}},
		}}},
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return b
}()

func BenchmarkReadRequest(b *testing.B) {
	b.SetBytes(int64(len(chatBody)))
	for b.Loop() {
		if _, err := ReadRequest(chatBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWithIncludeUsage(b *testing.B) {
	b.SetBytes(int64(len(chatBody)))
	for b.Loop() {
		if _, err := WithIncludeUsage(chatBody); err != nil {
			b.Fatal(err)
		}
	}
}
