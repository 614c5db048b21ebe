// Package upstream is a mock LLM provider speaking the OpenAI wire format,
// for tests, the test bed and the benchmark: POST /v1/chat/completions (a
// JSON answer of about 1 KB, or an SSE stream ending with the usage chunk
// when stream_options.include_usage is set), POST /v1/embeddings and
// GET /v1/models. It is tooling only, never imported by the product
// binaries.
//
// Every response body and header value is rendered once in New, so serving
// a request allocates little beyond reading the request body: the
// upstream's own cost stays small and identical for every client measured
// against it.
package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// GapHeader is the request header that sets the pause between a stream's
// events for that request (a Go duration such as "5ms"), overriding
// Options.ChunkDelay. Both the proxy and the benchmark's baseline forward
// it unchanged, so one upstream serves every streaming scenario. A value
// that does not parse gets 400.
const GapHeader = "X-Mock-Event-Gap"

// The token counts every chat completion reports in its usage object (the
// JSON body and the final usage chunk of a stream).
const (
	PromptTokens     = 120
	CompletionTokens = 180
	TotalTokens      = PromptTokens + CompletionTokens
)

// jsonSize is the approximate length of the non-streaming answer body.
const jsonSize = 1024

// Options configure a Handler. The zero value is usable.
type Options struct {
	// Key, when set, is the only accepted upstream API key
	// ("Authorization: Bearer KEY"); any other request gets 401, which
	// proves the caller swapped credentials. Empty accepts any.
	Key string
	// Latency is waited before a chat or embeddings answer is written (a
	// fixed upstream processing time).
	Latency time.Duration
	// Chunks is the number of content events of a stream (default 5).
	Chunks int
	// ChunkDelay is the pause between consecutive stream events (none
	// before the first); GapHeader overrides it per request.
	ChunkDelay time.Duration
}

// Counts are the requests a Handler has answered.
type Counts struct {
	Chat, Stream, Embeddings, Models, Unauthorized int64
}

// Handler is the mock upstream; it is safe for concurrent use.
type Handler struct {
	opts       Options
	auth       string
	chat       []byte
	events     [][]byte // content events, each a complete "data: ...\n\n"
	usage      []byte   // the include_usage event
	embeddings []byte
	models     []byte
	bufs       sync.Pool

	// Header values shared read-only by every response, so setting them
	// allocates nothing.
	chatLen, jsonType, sseType, noCache []string

	chatN, streamN, embeddingsN, modelsN, unauthorizedN atomic.Int64
}

// doneEvent ends every stream.
const doneEvent = "data: [DONE]\n\n"

// New returns a Handler with its responses pre-rendered.
func New(opts Options) *Handler {
	if opts.Chunks <= 0 {
		opts.Chunks = 5
	}
	h := &Handler{opts: opts, jsonType: []string{"application/json"}, sseType: []string{"text/event-stream"},
		noCache: []string{"no-cache"}}
	if opts.Key != "" {
		h.auth = "Bearer " + opts.Key
	}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	h.chat = renderChat()
	h.chatLen = []string{strconv.Itoa(len(h.chat))}
	for i := range opts.Chunks {
		delta := map[string]any{"content": fmt.Sprintf("word%02d ", i)}
		if i == 0 {
			delta["role"] = "assistant"
		}
		var finish any
		if i == opts.Chunks-1 {
			finish = "stop"
		}
		h.events = append(h.events, event(map[string]any{
			"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}))
	}
	h.usage = event(map[string]any{
		"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
		"choices": []any{}, "usage": usageObject(),
	})
	h.embeddings = fmt.Appendf(nil, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093,0.0157,-0.0047]}],`+
		`"model":"mock-embedding","usage":{"prompt_tokens":%d,"total_tokens":%d}}`, PromptTokens, PromptTokens)
	h.models = []byte(`{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"},` +
		`{"id":"mock-embedding","object":"model","created":1700000000,"owned_by":"mock"}]}`)
	return h
}

func usageObject() map[string]int {
	return map[string]int{"prompt_tokens": PromptTokens, "completion_tokens": CompletionTokens, "total_tokens": TotalTokens}
}

// renderChat builds a chat.completion of about jsonSize bytes.
func renderChat() []byte {
	content := ""
	for {
		b, _ := json.Marshal(map[string]any{
			"id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": content}}},
			"usage": usageObject(),
		})
		if len(b) >= jsonSize {
			return b
		}
		content += strings.Repeat("lorem ipsum ", (jsonSize-len(b)+11)/12)[:jsonSize-len(b)]
	}
}

func event(v any) []byte {
	b, _ := json.Marshal(v)
	return []byte("data: " + string(b) + "\n\n")
}

// JSONSize is the length of the non-streaming chat answer body.
func (h *Handler) JSONSize() int { return len(h.chat) }

// StreamSize is the length of a streamed chat answer body, with or without
// the include_usage event.
func (h *Handler) StreamSize(withUsage bool) int {
	n := len(doneEvent)
	for _, e := range h.events {
		n += len(e)
	}
	if withUsage {
		n += len(h.usage)
	}
	return n
}

// Counts returns how many requests of each kind were answered so far.
func (h *Handler) Counts() Counts {
	return Counts{Chat: h.chatN.Load(), Stream: h.streamN.Load(), Embeddings: h.embeddingsN.Load(),
		Models: h.modelsN.Load(), Unauthorized: h.unauthorizedN.Load()}
}

// ServeHTTP implements http.Handler: a wrong key gets 401, an unknown
// method or path 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.auth != "" && r.Header.Get("Authorization") != h.auth {
		h.unauthorizedN.Add(1)
		writeError(w, http.StatusUnauthorized, "invalid upstream API key", "invalid_api_key")
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		h.serveChat(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/embeddings":
		h.embeddingsN.Add(1)
		if wait(r, h.opts.Latency) {
			writeJSON(w, http.StatusOK, h.embeddings)
		}
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		h.modelsN.Add(1)
		writeJSON(w, http.StatusOK, h.models)
	default:
		writeError(w, http.StatusNotFound, "unknown endpoint "+r.Method+" "+r.URL.Path, "not_found")
	}
}

func (h *Handler) serveChat(w http.ResponseWriter, r *http.Request) {
	buf := h.bufs.Get().(*bytes.Buffer)
	defer h.bufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r.Body); err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error(), "invalid_request")
		return
	}
	body := buf.Bytes()
	// Validating catches a client (or proxy) that corrupts the body; the
	// two flags are then found by a byte scan, which costs no allocation.
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "body is not valid JSON", "invalid_request")
		return
	}
	if !jsonTrue(body, `"stream"`) {
		if !wait(r, h.opts.Latency) {
			return
		}
		h.chatN.Add(1)
		hd := w.Header()
		hd["Content-Type"] = h.jsonType
		hd["Content-Length"] = h.chatLen
		_, _ = w.Write(h.chat)
		return
	}
	gap := h.opts.ChunkDelay
	if g := r.Header.Get(GapHeader); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil {
			writeError(w, http.StatusBadRequest, GapHeader+": "+err.Error(), "invalid_request")
			return
		}
		gap = d
	}
	withUsage := jsonTrue(body, `"include_usage"`)
	if !wait(r, h.opts.Latency) {
		return
	}
	h.streamN.Add(1)
	h.stream(w, r, gap, withUsage)
}

// stream writes one event at a time and flushes each, as a real upstream
// does, pausing gap between events. It stops when the client goes away.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, gap time.Duration, withUsage bool) {
	hd := w.Header()
	hd["Content-Type"] = h.sseType
	hd["Cache-Control"] = h.noCache
	rc := http.NewResponseController(w)
	var timer *time.Timer
	if gap > 0 {
		timer = time.NewTimer(gap)
		defer timer.Stop()
	}
	write := func(ev []byte, pause bool) bool {
		if pause && timer != nil {
			timer.Reset(gap)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				return false
			}
		}
		if _, err := w.Write(ev); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for i, ev := range h.events {
		if !write(ev, i > 0) {
			return
		}
	}
	if withUsage && !write(h.usage, true) {
		return
	}
	write([]byte(doneEvent), false)
}

// jsonTrue reports whether body has the quoted key (`"stream"`) followed
// by a true value. It is a byte scan, not a parse: enough for the request
// bodies clients send and the proxy re-encodes.
func jsonTrue(body []byte, quotedKey string) bool {
	for {
		i := bytes.Index(body, []byte(quotedKey))
		if i < 0 {
			return false
		}
		body = body[i+len(quotedKey):]
		rest := bytes.TrimLeft(body, " \t\r\n")
		if len(rest) > 0 && rest[0] == ':' && bytes.HasPrefix(bytes.TrimLeft(rest[1:], " \t\r\n"), []byte("true")) {
			return true
		}
	}
}

// wait sleeps d unless the client goes away first; it reports whether the
// client is still there.
func wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, msg, code string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "code": code}})
	writeJSON(w, status, b)
}

// Server is a Handler served over HTTP on a TCP address.
type Server struct {
	*Handler
	// URL is the server's root, http://host:port (clients' base URL is
	// URL + "/v1").
	URL  string
	srv  *http.Server
	done chan error
}

// Start serves a new Handler on addr ("127.0.0.1:0" for a free port) until
// Close.
func Start(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &Server{Handler: New(opts), URL: "http://" + ln.Addr().String(), done: make(chan error, 1)}
	s.srv = &http.Server{Handler: s.Handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server at once, cutting open requests.
func (s *Server) Close() error {
	err := s.srv.Close()
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
