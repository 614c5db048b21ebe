package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestForwardCollectsAnswer(t *testing.T) {
	const chatJSON = `{"id":"c1","model":"gpt-4o","choices":[{"message":{"role":"assistant","content":"Hi there"}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`
	openAI := "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\\\"lo\"}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\n" +
		"data: [DONE]\n\n"
	anthropic := "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	tests := []struct {
		name, contentType, body string
		max                     int
		want                    string
		streamed, truncated     bool
	}{
		{"json", "application/json", chatJSON, 1 << 10, chatJSON, false, false},
		{"json over the cap: nothing (a read never splits)", "application/json", chatJSON, 20, "", false, true},
		{"openai stream", "text/event-stream", openAI, 1 << 10, `Hel\"lo world`, true, false},
		{"openai stream over the cap keeps whole deltas", "text/event-stream", openAI, 8, `Hel\"lo`, true, true},
		{"anthropic stream", "text/event-stream", anthropic, 1 << 10, `Hello`, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				io.WriteString(w, tc.body)
			}))
			t.Cleanup(srv.Close)
			f := newForwarder(t, time.Second)
			a := &Answer{Max: tc.max}
			rec := httptest.NewRecorder()
			body := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
			res, _ := f.Forward(t.Context(), rec, &Request{Method: http.MethodPost, Path: "/v1/chat/completions",
				Header: http.Header{}, Body: []byte(body), Answer: a}, Info{Model: "gpt-4o", Stream: true, IncludeUsage: true},
				Upstream{Provider: "openai", BaseURL: srv.URL + "/v1", APIKey: "k"})
			if res.Err != nil || rec.Body.String() != tc.body {
				t.Fatalf("relay changed: err %v, body %q", res.Err, rec.Body.String())
			}
			if string(a.Text) != tc.want || a.Streamed != tc.streamed || a.Truncated != tc.truncated {
				t.Errorf("Answer = (%q, streamed %t, truncated %t), want (%q, %t, %t)", a.Text, a.Streamed, a.Truncated,
					tc.want, tc.streamed, tc.truncated)
			}
		})
	}
}
