package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// BenchmarkRelay compares Forward with a plain httputil.ReverseProxy on the
// same upstream (a chat completion JSON body and a 40-event stream).
func BenchmarkRelay(b *testing.B) {
	var stream strings.Builder
	for range 40 {
		stream.WriteString(`data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"tok"}}],"usage":null}` + "\n\n")
	}
	stream.WriteString(`data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":40,"total_tokens":49}}` + "\n\ndata: [DONE]\n\n")
	bodies := map[string]string{"json": chatJSON, "sse": stream.String()}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		kind := strings.TrimPrefix(r.URL.Path, "/v1/")
		if kind == "sse" {
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		io.WriteString(w, bodies[kind])
	}))
	b.Cleanup(upstream.Close)
	target, _ := url.Parse(upstream.URL)
	f := New(Options{})
	b.Cleanup(f.Close)
	baseline := httputil.NewSingleHostReverseProxy(target)
	const reqBody = `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	forward := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		info, _ := Inspect(body)
		req := &Request{Method: r.Method, Path: r.URL.Path, Header: r.Header, Body: body, RequestID: "r"}
		f.Forward(r.Context(), w, req, info, Upstream{BaseURL: upstream.URL, APIKey: "k"})
	})
	for _, proxy := range []struct {
		name string
		h    http.Handler
	}{{"forward", forward}, {"reverseproxy", baseline}} {
		front := httptest.NewServer(proxy.h)
		b.Cleanup(front.Close)
		for kind := range bodies {
			b.Run(proxy.name+"/"+kind, func(b *testing.B) {
				for b.Loop() {
					resp, err := http.Post(front.URL+"/v1/"+kind, "application/json", strings.NewReader(reqBody))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	}
}

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

func BenchmarkInspect(b *testing.B) {
	b.SetBytes(int64(len(chatBody)))
	for b.Loop() {
		if _, err := Inspect(chatBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWithIncludeUsage(b *testing.B) {
	b.SetBytes(int64(len(chatBody)))
	for b.Loop() {
		if _, err := withIncludeUsage(chatBody); err != nil {
			b.Fatal(err)
		}
	}
}
