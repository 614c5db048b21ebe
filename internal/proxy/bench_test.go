package proxy

import (
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
