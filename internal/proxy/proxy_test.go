package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type outcome struct {
	res   Result
	wrote bool
}

// harness is the gateway side: an HTTP server whose handler reads the body
// and calls Forward, as the HTTP layer does.
type harness struct {
	url     string
	results chan outcome
}

func newHarness(t *testing.T, f *Forwarder, up Upstream) *harness {
	t.Helper()
	h := &harness{results: make(chan outcome, 1)}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		info, err := Inspect(body)
		if err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		req := &Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header, Body: body, RequestID: "req-1"}
		res, wrote := f.Forward(r.Context(), w, req, info, up)
		var perr *Error
		if !wrote && errors.As(res.Err, &perr) {
			http.Error(w, perr.Msg, perr.Status)
		}
		h.results <- outcome{res, wrote}
	}))
	t.Cleanup(front.Close)
	h.url = front.URL
	return h
}

func (h *harness) outcome(t *testing.T) outcome {
	t.Helper()
	select {
	case o := <-h.results:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("Forward did not return")
		return outcome{}
	}
}

func newForwarder(t *testing.T, timeout time.Duration) *Forwarder {
	f := New(Options{UpstreamTimeout: timeout})
	t.Cleanup(f.Close)
	return f
}

func post(t *testing.T, ctx context.Context, url, body string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return string(b)
}

type seen struct {
	path, query string
	header      http.Header
	body        []byte
}

// recordingUpstream answers every request with status and body after
// recording what it received.
func recordingUpstream(t *testing.T, status int, contentType, body string) (*httptest.Server, <-chan seen) {
	t.Helper()
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Header.Clone(), b}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("X-Request-Id", "upstream-req")
		w.Header().Set("Set-Cookie", "__cf_bm=abc; Path=/")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestForwardSwapsCredentials(t *testing.T) {
	tests := []struct {
		provider, base, path, body string
		wantPath, wantQuery        string
		keyHeader, keyValue        string
		respBody                   string
		wantUsage                  Usage
		wantModel                  string
	}{
		{"openai", "/v1", "/v1/chat/completions", `{"model":"gpt-4o","messages":[]}`, "/v1/chat/completions", "x=1",
			"Authorization", "Bearer sk-project", chatJSON, Usage{19, 10, 29}, "gpt-4.1-2025-04-14"},
		{"anthropic", "", "/v1/messages", `{"model":"claude","max_tokens":5,"messages":[]}`, "/v1/messages", "x=1",
			"X-Api-Key", "sk-project", anthropicJSON, Usage{20, 6, 26}, "claude-sonnet-4-20250514"},
		{"azure", "/", "/v1/embeddings", `{"model":"emb-deploy","input":"hi"}`, "/openai/deployments/emb-deploy/embeddings", "api-version=2024-10-21&x=1",
			"Api-Key", "sk-project", embeddingsJSON(3), Usage{8, 0, 8}, "text-embedding-3-small"},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			srv, got := recordingUpstream(t, http.StatusOK, "application/json", tt.respBody)
			up := Upstream{Provider: tt.provider, BaseURL: srv.URL + tt.base, APIKey: "sk-project"}
			h := newHarness(t, newForwarder(t, time.Second), up)
			resp := post(t, t.Context(), h.url+tt.path+"?x=1", tt.body, http.Header{
				"Authorization":       {"Bearer sk-client"},
				"X-Api-Key":           {"sk-client"},
				"Api-Key":             {"sk-client"},
				"Cookie":              {"sid=sk-client"},
				"Proxy-Authorization": {"Basic sk-client"},
				"Connection":          {"X-Hop"},
				"X-Hop":               {"sk-client"},
				"Content-Type":        {"application/json"},
				"X-Custom":            {"kept"},
			})
			respBody := readAll(t, resp)
			o := h.outcome(t)

			s := <-got
			for k, vv := range s.header {
				if strings.Contains(strings.Join(vv, ","), "sk-client") {
					t.Errorf("upstream saw client credential in %s", k)
				}
			}
			if v := s.header.Get(tt.keyHeader); v != tt.keyValue {
				t.Errorf("upstream %s = %q, want %q", tt.keyHeader, v, tt.keyValue)
			}
			if s.path != tt.wantPath || s.query != tt.wantQuery {
				t.Errorf("upstream URL = %s?%s, want %s?%s", s.path, s.query, tt.wantPath, tt.wantQuery)
			}
			if s.header.Get("X-Custom") != "kept" || s.header.Get("X-Request-Id") != "req-1" {
				t.Errorf("upstream X-Custom = %q, X-Request-Id = %q", s.header.Get("X-Custom"), s.header.Get("X-Request-Id"))
			}
			if tt.provider == "anthropic" && s.header.Get("Anthropic-Version") != "2023-06-01" {
				t.Errorf("anthropic-version = %q", s.header.Get("Anthropic-Version"))
			}
			if string(s.body) != tt.body {
				t.Errorf("upstream body = %s, want %s", s.body, tt.body)
			}

			if resp.StatusCode != http.StatusOK || respBody != tt.respBody {
				t.Errorf("client got %d %.200s", resp.StatusCode, respBody)
			}
			if resp.Header.Get("X-Request-Id") != "req-1" || resp.Header.Get("X-Upstream-Request-Id") != "upstream-req" {
				t.Errorf("client request ids = %q, %q", resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Upstream-Request-Id"))
			}
			if resp.Header.Get("Set-Cookie") != "" || !strings.HasPrefix(resp.Header.Get("Server-Timing"), "proxy;dur=") {
				t.Errorf("client headers: Set-Cookie %q, Server-Timing %q", resp.Header.Get("Set-Cookie"), resp.Header.Get("Server-Timing"))
			}
			want := Result{Status: 200, Model: tt.wantModel, Usage: tt.wantUsage}
			if diff := cmp.Diff(want, o.res, resultCmp); diff != "" || !o.wrote {
				t.Errorf("result (-want +got):\n%s wrote=%v", diff, o.wrote)
			}
		})
	}
}

// resultCmp ignores durations and compares errors by status.
var resultCmp = cmp.Options{
	cmp.FilterPath(func(p cmp.Path) bool {
		n := p.Last().String()
		return n == ".TTFB" || n == ".Upstream" || n == ".Overhead"
	}, cmp.Ignore()),
	cmp.Comparer(func(a, b error) bool {
		var ea, eb *Error
		if errors.As(a, &ea) && errors.As(b, &eb) {
			return ea.Status == eb.Status && ea.Msg == eb.Msg
		}
		return a == nil && b == nil
	}),
}

// The upstream is asked for an uncompressed answer (usage is read from it),
// whatever the client accepts; one that compresses anyway is relayed as it
// is, Content-Encoding included, for the client to decode.
func TestForwardUncompressedUpstream(t *testing.T) {
	var compress atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ae := r.Header.Get("Accept-Encoding"); ae != "" {
			t.Errorf("upstream Accept-Encoding = %q, want none", ae)
		}
		w.Header().Set("Content-Type", "application/json")
		if !compress.Load() {
			io.WriteString(w, chatJSON)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, chatJSON)
		zw.Close()
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, newForwarder(t, time.Second), Upstream{BaseURL: srv.URL, APIKey: "k"})
	resp := post(t, t.Context(), h.url+"/v1/chat/completions", `{"model":"m"}`, http.Header{"Accept-Encoding": {"br"}})
	if body := readAll(t, resp); body != chatJSON {
		t.Errorf("client body = %.200s", body)
	}
	if o := h.outcome(t); o.res.Usage != (Usage{19, 10, 29}) {
		t.Errorf("usage = %+v", o.res.Usage)
	}

	compress.Store(true)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	req.Header.Set("Accept-Encoding", "gzip")
	raw, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Body.Close()
	zr, err := gzip.NewReader(raw.Body)
	if err != nil || raw.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("relayed body is not the upstream's gzip stream (Content-Encoding %q): %v", raw.Header.Get("Content-Encoding"), err)
	}
	if plain, err := io.ReadAll(zr); err != nil || string(plain) != chatJSON {
		t.Errorf("decoded body = %.200s, %v", plain, err)
	}
	h.outcome(t)
}

func TestForwardRelaysUpstreamErrors(t *testing.T) {
	tests := []struct {
		status      int
		contentType string
		body        string
	}{
		{http.StatusTooManyRequests, "application/json", `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"},"usage":{"prompt_tokens":5}}`},
		{http.StatusInternalServerError, "text/plain", "upstream exploded"},
		{http.StatusBadRequest, "text/event-stream", `{"error":{"message":"bad"}}`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			h := newHarness(t, newForwarder(t, time.Second), Upstream{BaseURL: srv.URL + "/v1", APIKey: "k"})
			resp := post(t, t.Context(), h.url+"/v1/chat/completions", `{"model":"m","stream":true}`, nil)
			body := readAll(t, resp)
			if resp.StatusCode != tt.status || body != tt.body || resp.Header.Get("Retry-After") != "7" {
				t.Errorf("client got %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
			}
			o := h.outcome(t)
			want := Result{Status: tt.status, Model: "m"}
			if diff := cmp.Diff(want, o.res, resultCmp); diff != "" || !o.wrote {
				t.Errorf("result (-want +got):\n%s wrote=%v", diff, o.wrote)
			}
		})
	}
}

// openAIStream is a fake OpenAI chat stream: a role chunk, one chunk per
// word, a finish chunk, the usage-only chunk when asked for, then [DONE].
func openAIStream(t *testing.T, words ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model         string `json:"model"`
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("upstream body: %v", err)
		}
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		usage := ""
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			usage = `,"usage":null`
		}
		chunk := func(choices string) {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":%s%s}\n\n", choices, usage)
		}
		chunk(`[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`)
		for _, word := range words {
			chunk(`[{"index":0,"delta":{"content":"` + word + `"},"finish_reason":null}]`)
		}
		chunk(`[{"index":0,"delta":{},"finish_reason":"stop"}]`)
		if usage != "" {
			usage = fmt.Sprintf(`,"usage":{"prompt_tokens":11,"completion_tokens":%d,"total_tokens":%d}`, len(words), 11+len(words))
			chunk(`[]`)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}
}

func TestForwardStreamUsage(t *testing.T) {
	const usageChunk = `"choices":[],"usage":{"prompt_tokens":11`
	tests := []struct {
		name, provider, base, body string
		wantUsageChunk             bool
	}{
		{"client without include_usage", "openai", "/v1", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"client with include_usage", "openai", "/v1", `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`, true},
		{"client with include_usage false", "openai", "/v1", `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}`, false},
		{"azure", "azure", "", `{"model":"gpt-4o","stream":true}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(openAIStream(t, "Hello", " world", "!"))
			t.Cleanup(srv.Close)
			h := newHarness(t, newForwarder(t, time.Second), Upstream{Provider: tt.provider, BaseURL: srv.URL + tt.base, APIKey: "k"})
			resp := post(t, t.Context(), h.url+"/v1/chat/completions", tt.body, nil)
			body := readAll(t, resp)
			if got := strings.Contains(body, usageChunk); got != tt.wantUsageChunk {
				t.Errorf("client saw usage chunk = %v, want %v; body:\n%s", got, tt.wantUsageChunk, body)
			}
			if !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Count(body, "\n\n") != 6+btoi(tt.wantUsageChunk) {
				t.Errorf("client body events wrong:\n%s", body)
			}
			o := h.outcome(t)
			want := Result{Status: 200, Model: "gpt-4o-2024-08-06", Usage: Usage{11, 3, 14}, Streamed: true}
			if diff := cmp.Diff(want, o.res, resultCmp); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestForwardAnthropicStream(t *testing.T) {
	events := []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
		"event: ping\ndata: {\"type\": \"ping\"}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
	const reqBody = `{"model":"claude-sonnet-4-20250514","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Hello"}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); string(b) != reqBody {
			t.Errorf("anthropic body changed: %s", b)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range events {
			io.WriteString(w, ev)
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, newForwarder(t, time.Second), Upstream{Provider: "anthropic", BaseURL: srv.URL, APIKey: "k"})
	body := readAll(t, post(t, t.Context(), h.url+"/v1/messages", reqBody, nil))
	if body != strings.Join(events, "") {
		t.Errorf("client body:\n%s", body)
	}
	o := h.outcome(t)
	want := Result{Status: 200, Model: "claude-sonnet-4-20250514", Usage: Usage{25, 15, 40}, Streamed: true}
	if diff := cmp.Diff(want, o.res, resultCmp); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

// readEvent reads one SSE event (through its blank line).
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		ev.WriteString(line)
		if err != nil {
			t.Fatalf("read event: %v (got %q)", err, ev.String())
		}
		if line == "\n" {
			return ev.String()
		}
	}
}

func TestForwardStreamsEventsAsTheyArrive(t *testing.T) {
	ack := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"%d\"}}]}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-ack: // the client has this event; only now send the next
			case <-r.Context().Done():
				return
			}
		}
		time.Sleep(150 * time.Millisecond) // quiet for longer than the header timeout
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, newForwarder(t, 50*time.Millisecond), Upstream{BaseURL: srv.URL, APIKey: "k"})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp := post(t, ctx, h.url+"/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, nil)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for i := range 3 {
		if ev, want := readEvent(t, r), fmt.Sprintf("data: {\"choices\":[{\"delta\":{\"content\":\"%d\"}}]}\n\n", i); ev != want {
			t.Fatalf("event %d = %q, want %q", i, ev, want)
		}
		ack <- struct{}{}
	}
	if ev := readEvent(t, r); ev != "data: [DONE]\n\n" {
		t.Errorf("last event = %q", ev)
	}
	o := h.outcome(t)
	if o.res.Status != 200 || o.res.Err != nil || !o.res.Streamed || o.res.Upstream < 150*time.Millisecond {
		t.Errorf("result = %+v", o.res)
	}
}

func TestForwardClientAbortMidStream(t *testing.T) {
	cancelled := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n")
		for _, word := range []string{"one", "two"} {
			fmt.Fprintf(w, "data: {\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"delta\":{\"content\":%q}}],\"usage\":null}\n\n", word)
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, newForwarder(t, time.Second), Upstream{BaseURL: srv.URL + "/v1", APIKey: "k"})
	const reqBody = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"count to ten please"}]}`
	ctx, cancel := context.WithCancel(t.Context())
	resp := post(t, ctx, h.url+"/v1/chat/completions", reqBody, nil)
	r := bufio.NewReader(resp.Body)
	for range 3 {
		readEvent(t, r)
	}
	cancel()
	resp.Body.Close()

	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled")
	}
	o := h.outcome(t)
	want := Result{
		Status:     StatusClientClosedRequest,
		Model:      "gpt-4o-2024-08-06",
		Usage:      Usage{len(reqBody) / 4, 3, len(reqBody)/4 + 3},
		Streamed:   true,
		ClientGone: true,
		Err:        &Error{Status: StatusClientClosedRequest, Msg: "client closed request"},
	}
	if diff := cmp.Diff(want, o.res, resultCmp); diff != "" || !o.wrote {
		t.Errorf("result (-want +got):\n%s wrote=%v", diff, o.wrote)
	}
}

// TestForwardClientHangsUpAfterDone: SDKs close the stream as soon as they
// read [DONE]; when the upstream has not closed its side yet, that is a
// complete answer, not a 499.
func TestForwardClientHangsUpAfterDone(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
		io.WriteString(w, "data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\n")
		io.WriteString(w, "data: [DONE]\n\n")
		w.(http.Flusher).Flush()
		select { // the upstream lingers before closing
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, newForwarder(t, time.Second), Upstream{BaseURL: srv.URL + "/v1", APIKey: "k"})
	ctx, cancel := context.WithCancel(t.Context())
	resp := post(t, ctx, h.url+"/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, nil)
	r := bufio.NewReader(resp.Body)
	for {
		if ev := readEvent(t, r); strings.Contains(ev, "[DONE]") {
			break
		}
	}
	cancel()
	resp.Body.Close()
	o := h.outcome(t)
	want := Result{Status: http.StatusOK, Model: "m", Usage: Usage{4, 1, 5}, Streamed: true}
	if diff := cmp.Diff(want, o.res, resultCmp); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestForwardFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String()
	ln.Close()

	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(release) })

	tests := []struct {
		name          string
		base          string
		clientTimeout time.Duration
		wantStatus    int
		wantMsg       string
	}{
		{"closed port", closedURL, 0, http.StatusBadGateway, "upstream unreachable"},
		{"unresolvable host", "http://upstream.invalid", 0, http.StatusBadGateway, "upstream unreachable"},
		{"no headers in time", hanging.URL, 0, http.StatusGatewayTimeout, "upstream timed out"},
		{"client gives up first", hanging.URL, 50 * time.Millisecond, StatusClientClosedRequest, "client closed request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := 200 * time.Millisecond
			if tt.clientTimeout > 0 {
				timeout = 5 * time.Second
			}
			h := newHarness(t, newForwarder(t, timeout), Upstream{BaseURL: tt.base, APIKey: "k"})
			ctx := t.Context()
			if tt.clientTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.clientTimeout)
				defer cancel()
			}
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
			resp, err := http.DefaultClient.Do(req)
			if tt.clientTimeout == 0 {
				if err != nil {
					t.Fatalf("POST: %v", err)
				}
				if body := readAll(t, resp); resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantMsg) {
					t.Errorf("client got %d %q", resp.StatusCode, body)
				}
			} else if err == nil {
				resp.Body.Close()
				t.Fatal("client request unexpectedly finished")
			}
			o := h.outcome(t)
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("took %v", elapsed)
			}
			var perr *Error
			if !errors.As(o.res.Err, &perr) || perr.Status != tt.wantStatus || perr.Msg != tt.wantMsg || o.res.Status != tt.wantStatus || o.wrote {
				t.Errorf("result = %+v wrote=%v, want %d %q and nothing written", o.res, o.wrote, tt.wantStatus, tt.wantMsg)
			}
			if o.res.ClientGone != (tt.wantStatus == StatusClientClosedRequest) {
				t.Errorf("ClientGone = %v", o.res.ClientGone)
			}
		})
	}
}

func TestForwardUpstreamBreaksOffStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, newForwarder(t, time.Second), Upstream{BaseURL: srv.URL, APIKey: "k"})
	resp := post(t, t.Context(), h.url+"/v1/chat/completions", `{"model":"m","stream":true}`, nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.HasPrefix(b, []byte("data: {\"choices\"")) {
		t.Errorf("client got %q", b)
	}
	o := h.outcome(t)
	var perr *Error
	if !errors.As(o.res.Err, &perr) || perr.Status != http.StatusBadGateway || o.res.Status != http.StatusBadGateway || o.res.ClientGone || !o.wrote {
		t.Errorf("result = %+v wrote=%v, want 502 after writing", o.res, o.wrote)
	}
	if o.res.Usage.CompletionTokens != 1 {
		t.Errorf("usage = %+v, want 1 estimated completion token", o.res.Usage)
	}
}

// An upstream behind an egress proxy (HTTPS_PROXY and friends) is reached
// through it; the others stay direct.
func TestForwardThroughEgressProxy(t *testing.T) {
	direct := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, chatJSON)
	}))
	t.Cleanup(direct.Close)
	var proxied atomic.Int64
	egress := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() || r.URL.Host != "upstream.example:8443" || r.Header.Get("Authorization") != "Bearer k" {
			t.Errorf("egress proxy got %s %s (Authorization %q)", r.Method, r.URL, r.Header.Get("Authorization"))
		}
		proxied.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, chatJSON)
	}))
	t.Cleanup(egress.Close)
	egressURL, _ := url.Parse(egress.URL)
	f := New(Options{UpstreamTimeout: time.Second, Proxy: func(u *url.URL) (*url.URL, error) {
		if u.Hostname() == "upstream.example" {
			return egressURL, nil
		}
		return nil, nil
	}})
	t.Cleanup(f.Close)
	for _, up := range []Upstream{{BaseURL: "http://upstream.example:8443/v1", APIKey: "k"}, {BaseURL: direct.URL, APIKey: "k"}} {
		h := newHarness(t, f, up)
		resp := post(t, t.Context(), h.url+"/v1/chat/completions", `{"model":"m"}`, nil)
		if body := readAll(t, resp); body != chatJSON {
			t.Errorf("%s: client body = %.200s", up.BaseURL, body)
		}
		if o := h.outcome(t); o.res.Status != http.StatusOK || o.res.Usage != (Usage{19, 10, 29}) {
			t.Errorf("%s: result %+v", up.BaseURL, o.res)
		}
	}
	if n := proxied.Load(); n != 1 {
		t.Errorf("%d requests through the egress proxy, want 1", n)
	}
}
