package upstream_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

func start(t *testing.T, opts upstream.Options) *upstream.Server {
	t.Helper()
	s, err := upstream.Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// do sends one request and returns the response with its whole body.
func do(t *testing.T, method, url, key, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

var wantUsage = usage{upstream.PromptTokens, upstream.CompletionTokens, upstream.TotalTokens}

func TestChatJSON(t *testing.T) {
	s := start(t, upstream.Options{Key: "k"})
	// "stream" inside a message must not turn the answer into a stream.
	resp, raw := do(t, http.MethodPost, s.URL+"/v1/chat/completions", "k",
		`{"model":"m","messages":[{"role":"user","content":"stream"}],"stream" : false}`, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	if len(raw) != s.JSONSize() || len(raw) < 1000 || len(raw) > 1100 {
		t.Errorf("body is %d bytes, JSONSize %d, want about 1 KB", len(raw), s.JSONSize())
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(raw)) {
		t.Errorf("Content-Length %q for %d bytes", cl, len(raw))
	}
	var body struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage usage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatal(err)
	}
	if body.Usage != wantUsage || len(body.Choices) != 1 || len(body.Choices[0].Message.Content) < 500 {
		t.Errorf("body %+v", body)
	}
	if got, want := s.Counts(), (upstream.Counts{Chat: 1}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestChatStream(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		wantUsage bool
	}{
		{"without usage", `{"stream":true}`, false},
		{"usage not asked", `{"stream":true,"stream_options":{"include_usage":false}}`, false},
		{"with usage, spaced JSON", `{"stream": true, "stream_options": {"include_usage" : true}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, upstream.Options{Key: "k", Chunks: 3})
			resp, raw := do(t, http.MethodPost, s.URL+"/v1/chat/completions", "k", tc.body, nil)
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q", resp.StatusCode, ct)
			}
			if len(raw) != s.StreamSize(tc.wantUsage) {
				t.Errorf("body %d bytes, StreamSize %d", len(raw), s.StreamSize(tc.wantUsage))
			}
			var events []string
			for _, ev := range strings.Split(strings.TrimSuffix(raw, "\n\n"), "\n\n") {
				data, ok := strings.CutPrefix(ev, "data: ")
				if !ok {
					t.Fatalf("event %q lacks the data: prefix", ev)
				}
				events = append(events, data)
			}
			wantN := 3 + 1
			if tc.wantUsage {
				wantN++
			}
			if len(events) != wantN || events[len(events)-1] != "[DONE]" {
				t.Fatalf("events %q, want %d ending in [DONE]", events, wantN)
			}
			var content strings.Builder
			for _, ev := range events[:3] {
				var c struct {
					Choices []struct {
						Delta struct{ Content string } `json:"delta"`
					} `json:"choices"`
				}
				if err := json.Unmarshal([]byte(ev), &c); err != nil || len(c.Choices) != 1 {
					t.Fatalf("content event %s: %v", ev, err)
				}
				content.WriteString(c.Choices[0].Delta.Content)
			}
			if content.Len() == 0 {
				t.Error("content events carry no text")
			}
			var last struct {
				Usage *usage `json:"usage"`
			}
			if err := json.Unmarshal([]byte(events[len(events)-2]), &last); err != nil {
				t.Fatal(err)
			}
			if got := last.Usage != nil && *last.Usage == wantUsage; got != tc.wantUsage {
				t.Errorf("usage chunk %+v, want present=%t", last.Usage, tc.wantUsage)
			}
			if got, want := s.Counts(), (upstream.Counts{Stream: 1}); got != want {
				t.Errorf("counts %+v, want %+v", got, want)
			}
		})
	}
}

func TestStreamGap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   upstream.Options
		header map[string]string
		min    time.Duration
	}{
		{"ChunkDelay", upstream.Options{Chunks: 5, ChunkDelay: 20 * time.Millisecond}, nil, 80 * time.Millisecond},
		{"GapHeader", upstream.Options{Chunks: 5}, map[string]string{upstream.GapHeader: "20ms"}, 80 * time.Millisecond},
		{"GapHeader overrides ChunkDelay", upstream.Options{Chunks: 5, ChunkDelay: time.Second},
			map[string]string{upstream.GapHeader: "0s"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, tc.opts)
			begin := time.Now()
			resp, raw := do(t, http.MethodPost, s.URL+"/v1/chat/completions", "any", `{"stream":true}`, tc.header)
			d := time.Since(begin)
			if resp.StatusCode != http.StatusOK || len(raw) != s.StreamSize(false) {
				t.Fatalf("status %d, %d bytes: %s", resp.StatusCode, len(raw), raw)
			}
			// 5 events have 4 gaps; a zero gap must not wait for the
			// one-second ChunkDelay.
			if d < tc.min || (tc.min == 0 && d > 500*time.Millisecond) {
				t.Errorf("stream took %v, want at least %v", d, tc.min)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	s := start(t, upstream.Options{Key: "k"})
	for _, tc := range []struct {
		name, method, path, key, body string
		header                        map[string]string
		want                          int
	}{
		{"wrong key", http.MethodPost, "/v1/chat/completions", "client-token", `{}`, nil, http.StatusUnauthorized},
		{"unknown path", http.MethodPost, "/v1/completions", "k", `{}`, nil, http.StatusNotFound},
		{"wrong method", http.MethodGet, "/v1/chat/completions", "k", ``, nil, http.StatusNotFound},
		{"invalid JSON", http.MethodPost, "/v1/chat/completions", "k", `{"stream":true`, nil, http.StatusBadRequest},
		{"bad gap", http.MethodPost, "/v1/chat/completions", "k", `{"stream":true}`, map[string]string{upstream.GapHeader: "soon"}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, s.URL+tc.path, tc.key, tc.body, tc.header)
			var e struct {
				Error struct{ Message string } `json:"error"`
			}
			if resp.StatusCode != tc.want || json.Unmarshal([]byte(body), &e) != nil || e.Error.Message == "" {
				t.Errorf("status %d, body %s; want %d with an OpenAI error body", resp.StatusCode, body, tc.want)
			}
		})
	}
	if got, want := s.Counts(), (upstream.Counts{Unauthorized: 1}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestEmbeddingsAndModels(t *testing.T) {
	s := start(t, upstream.Options{Key: "k"})
	if resp, body := do(t, http.MethodPost, s.URL+"/v1/embeddings", "k", `{"input":"x"}`, nil); resp.StatusCode != http.StatusOK ||
		!strings.Contains(body, `"embedding"`) {
		t.Errorf("embeddings: status %d, body %s", resp.StatusCode, body)
	}
	if resp, body := do(t, http.MethodGet, s.URL+"/v1/models", "k", ``, nil); resp.StatusCode != http.StatusOK ||
		!strings.Contains(body, `"object":"list"`) {
		t.Errorf("models: status %d, body %s", resp.StatusCode, body)
	}
	if got, want := s.Counts(), (upstream.Counts{Embeddings: 1, Models: 1}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestEmptyKeyAcceptsAny(t *testing.T) {
	s := start(t, upstream.Options{})
	if resp, body := do(t, http.MethodPost, s.URL+"/v1/chat/completions", "whatever", `{}`, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, body %s", resp.StatusCode, body)
	}
}
