// Package proxy relays one already-authenticated client request to a
// project's upstream LLM provider (OpenAI or any OpenAI-compatible API,
// Anthropic, Azure OpenAI) and the answer back to the client.
//
// It swaps the client's credentials for the project's key, streams SSE
// events through as they arrive, reads token usage from the response (asking
// OpenAI-style streams for it when the client did not) and maps failures
// precisely: 502 upstream unreachable, 504 upstream timed out, 499 client
// went away. Authentication, limits and recording live with the caller.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/llmproxy/llm-proxy/internal/proxy/h1"
	"github.com/llmproxy/llm-proxy/internal/proxy/jsonscan"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// StatusClientClosedRequest is the non-standard status (nginx, caddy)
// reported when the client went away before the response was complete.
const StatusClientClosedRequest = 499

const (
	copyBufSize  = 8 << 10 // read size for upstream bodies (an LLM answer or a burst of SSE events)
	maxEventSize = 1 << 20 // larger SSE events pass through uninspected
	headCap      = 1 << 10 // bytes kept from the start of a JSON body (model)
	tailCap      = 4 << 10 // bytes kept from the end of a JSON body (usage)
)

// Upstream is where a project's requests go.
type Upstream struct {
	// Provider is one of Providers; anything else is spoken to as an
	// OpenAI-compatible API.
	Provider string
	// BaseURL is the provider API root as its SDK takes it
	// (https://api.openai.com/v1, https://api.anthropic.com,
	// https://NAME.openai.azure.com), with or without a trailing /v1.
	BaseURL string
	// APIKey is the clear upstream key; it is sent upstream and never logged.
	APIKey string
	// APIVersion is the Azure api-version; empty means the client's
	// api-version query parameter, else DefaultAPIVersion.
	APIVersion string
}

// Usage is the token usage of one request. Anthropic cache-creation and
// cache-read input tokens count as prompt tokens.
type Usage struct{ PromptTokens, CompletionTokens, TotalTokens int }

// Request is what the HTTP layer knows before forwarding.
type Request struct {
	Method string
	// Path is the decoded client path; it starts with /v1/.
	Path     string
	RawQuery string
	// Header holds the client headers, credentials included; Forward never
	// modifies it and strips the credentials from its upstream copy.
	Header http.Header
	// Body is the whole client body, already read (nil for GET).
	Body []byte
	// RequestID is sent upstream and to the client as X-Request-ID.
	RequestID string
	// Received is when the request reached the gateway, for the proxy
	// part of Server-Timing; zero means when Forward was called.
	Received time.Time
	// Answer, when set, collects the answer's text for memory capture
	// (successful JSON and SSE responses only).
	Answer *Answer
}

// Answer collects a chat answer as it is relayed, bounded by Max bytes,
// so memory capture reads it without buffering the response twice.
type Answer struct {
	// Max bounds Text; what does not fit is dropped and Truncated set.
	Max int
	// Text is, for a stream (Streamed), the JSON-escaped text of its
	// deltas concatenated (the contents of one JSON string; whole deltas
	// only, so it always decodes), else the response body itself.
	Text      []byte
	Streamed  bool
	Truncated bool
}

// add appends p unless it would pass Max; once something was dropped,
// nothing more is added (the text stays a prefix of the answer).
func (a *Answer) add(p []byte) {
	if a.Truncated || len(a.Text)+len(p) > a.Max {
		a.Truncated = true
		return
	}
	a.Text = append(a.Text, p...)
}

// Result reports what happened, for usage recording and metrics.
type Result struct {
	// Status is the status sent to the client, or 499 when the client went
	// away, 502/504 on upstream failure (also after the upstream status was
	// sent, when the upstream broke off its body).
	Status int
	// Model is the model named by the response when present, else by the
	// request.
	Model string
	// Usage is the usage the upstream reported; see Forward for estimates.
	Usage    Usage
	Streamed bool
	// TTFB runs from sending the request upstream to its response headers.
	TTFB time.Duration
	// Overhead is the time spent in the gateway before the response headers
	// went to the client, upstream wait excluded: the proxy part of
	// Server-Timing.
	Overhead time.Duration
	// Upstream runs from sending the request upstream to the end of its
	// response body (or the failure).
	Upstream   time.Duration
	ClientGone bool
	// Err is an *Error for 499, 502 and 504, nil otherwise.
	Err error
}

// Error is the one typed upstream error. Status is 502, 504 or 499; Msg is
// safe to show to the client; Err is the cause, for logs.
type Error struct {
	Status int
	Msg    string
	Err    error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Options configures a Forwarder.
type Options struct {
	// UpstreamTimeout bounds the wait for the upstream's response headers
	// (after the request is sent), and connecting when it is under 30s.
	// Zero means no limit but the request's context: the setting and its
	// default belong to the caller (UPSTREAM_TIMEOUT).
	UpstreamTimeout time.Duration
	// UpstreamIdleTimeout bounds the silence between bytes of a response
	// body or stream once its headers came; past it the exchange ends as
	// a 504 and the client's response is cut. Zero means no limit: a
	// body's total time is never limited.
	UpstreamIdleTimeout time.Duration
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// TracerProvider, when set, traces each upstream call; nil keeps
	// tracing off the request path.
	TracerProvider trace.TracerProvider
	// Proxy returns the egress proxy for an upstream URL (nil for none), as
	// http.ProxyFromEnvironment does; nil means no upstream is proxied.
	Proxy func(*url.URL) (*url.URL, error)
}

// Forwarder sends requests upstream over keep-alive connections: its own
// HTTP/1.1 client (package h1) for direct connections, net/http's Transport
// for upstreams reached through an egress proxy. It is safe for concurrent
// use.
type Forwarder struct {
	client    *h1.Client
	idle      time.Duration   // UpstreamIdleTimeout, for the egress-proxy path
	transport *http.Transport // for proxied upstreams
	proxy     func(*url.URL) (*url.URL, error)
	log       *slog.Logger
	tracer    trace.Tracer // nil when tracing is off
	bufs      sync.Pool    // *buffers

	bases     sync.Map // parsed base URLs (*url.URL) by their text
	baseCount atomic.Int64
}

// maxBases bounds the parsed base URLs kept; past it the cache starts over
// (base URLs change only by project updates).
const maxBases = 4096

// baseURL returns raw parsed by parseBase, parsing each distinct value once.
func (f *Forwarder) baseURL(raw string) (*url.URL, error) {
	if u, ok := f.bases.Load(raw); ok {
		return u.(*url.URL), nil
	}
	u, err := parseBase(raw)
	if err != nil {
		return nil, err
	}
	if f.baseCount.Add(1) > maxBases {
		f.bases.Clear()
		f.baseCount.Store(1)
	}
	f.bases.Store(raw, u)
	return u, nil
}

type buffers struct {
	buf  []byte
	head []byte
	tail []byte
}

// New returns a Forwarder. Call Close when done with it.
func New(opts Options) *Forwarder {
	timeout := max(opts.UpstreamTimeout, 0)
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Zero (no UpstreamTimeout) leaves h1's default dial timeout.
	dialTimeout := min(timeout, h1.DefaultDialTimeout)
	f := &Forwarder{
		client: h1.New(h1.Options{DialTimeout: dialTimeout, ResponseHeaderTimeout: timeout, BodyIdleTimeout: opts.UpstreamIdleTimeout}),
		idle:   opts.UpstreamIdleTimeout,
		proxy:  opts.Proxy,
		log:    logger,
	}
	if opts.Proxy != nil {
		dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
		f.transport = &http.Transport{
			Proxy:                 func(r *http.Request) (*url.URL, error) { return opts.Proxy(r.URL) },
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       h1.DefaultIdleTimeout,
			TLSHandshakeTimeout:   min(timeout, 10*time.Second),
			ExpectContinueTimeout: time.Second,
			ResponseHeaderTimeout: timeout,
			// Without an Accept-Encoding from us the Transport would
			// negotiate gzip; plain bytes are what usage is read from.
			DisableCompression: true,
		}
	}
	if opts.TracerProvider != nil {
		f.tracer = opts.TracerProvider.Tracer(tracerName)
	}
	f.bufs.New = func() any {
		return &buffers{
			buf:  make([]byte, copyBufSize),
			head: make([]byte, 0, headCap),
			tail: make([]byte, 0, 2*tailCap),
		}
	}
	return f
}

// Close closes idle upstream connections. In-flight requests are not
// interrupted.
func (f *Forwarder) Close() {
	f.client.Close()
	if f.transport != nil {
		f.transport.CloseIdleConnections()
	}
}

// Forward sends req to up and relays the response to w, returning the
// result. info must describe req.Body (see Inspect); its Model names the
// Azure deployment. Forward never panics on upstream garbage and retries
// only a request that provably never reached the upstream (written to a
// pooled connection the upstream had closed).
//
// wrote reports whether the response status was written to w; when it is
// false and res.Err is set, the caller writes the error response.
//
// Upstream 4xx/5xx responses are relayed as they are, with zero usage and
// nil Err. For successful SSE streams that did not report usage, or that
// ended early (client gone, upstream broke off), usage is estimated:
// PromptTokens falls back to info.PromptEstimate, and CompletionTokens is at
// least the number of events carrying a "delta" (about one token per
// OpenAI chunk, a lower bound for Anthropic).
//
// With Options.TracerProvider set, the call is a client span (GenAI
// attributes, never the key or any body text) whose W3C trace context is
// sent upstream.
func (f *Forwarder) Forward(ctx context.Context, w http.ResponseWriter, req *Request, info Info, up Upstream) (res Result, wrote bool) {
	if f.tracer == nil {
		return f.forward(ctx, w, req, info, up)
	}
	ctx, span := f.startSpan(ctx, req, info, up)
	res, wrote = f.forward(ctx, w, req, info, up)
	endSpan(span, &res)
	return res, wrote
}

func (f *Forwarder) forward(ctx context.Context, w http.ResponseWriter, req *Request, info Info, up Upstream) (res Result, wrote bool) {
	res.Model = info.Model
	received := req.Received
	if received.IsZero() {
		received = time.Now()
	}
	out, strip, err := f.upstreamRequest(ctx, req, info, up)
	if err != nil {
		res.fail(&Error{Status: http.StatusBadGateway, Msg: "upstream misconfigured", Err: err})
		return res, false
	}

	sent := time.Now()
	resp, err := f.roundTrip(ctx, out)
	if err != nil {
		res.Upstream = time.Since(sent)
		res.fail(roundTripError(ctx, err))
		return res, false
	}
	defer resp.Body.Close()
	res.TTFB = time.Since(sent)
	res.Status = resp.StatusCode

	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	sse := ok && isEventStream(resp.Header)
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	if sse && strip {
		h.Del("Content-Length")
	}
	if req.RequestID != "" {
		h.Set("X-Request-Id", req.RequestID)
	}
	res.Overhead = time.Since(received) - res.TTFB
	h.Add("Server-Timing", serverTiming(res.Overhead, res.TTFB))
	w.WriteHeader(resp.StatusCode)

	rc := http.NewResponseController(w)
	bufs := f.bufs.Get().(*buffers)
	defer f.bufs.Put(bufs)
	var readErr, writeErr error
	switch {
	case sse:
		res.Streamed = true
		s := sseRelay{w: w, rc: rc, strip: strip, answer: req.Answer}
		if req.Answer != nil {
			req.Answer.Streamed = true
		}
		readErr, writeErr = s.run(resp.Body, bufs.buf)
		if s.ended && writeErr == nil {
			// The whole answer reached the client; a client that hangs up
			// right after the terminal event (SDKs do) cut nothing.
			readErr = nil
		}
		res.Usage = s.result(info, readErr == nil && writeErr == nil)
		if s.model != "" {
			res.Model = s.model
		}
	case ok && isJSON(resp.Header):
		c := capture{head: bufs.head[:0], tail: bufs.tail[:0], answer: req.Answer}
		readErr, writeErr = copyBody(w, rc, resp.Body, bufs.buf, &c, resp.ContentLength < 0)
		var model string
		res.Usage, model = c.result()
		if model != "" {
			res.Model = model
		}
	default:
		readErr, writeErr = copyBody(w, rc, resp.Body, bufs.buf, nil, resp.ContentLength < 0)
	}
	res.Upstream = time.Since(sent)

	switch {
	case writeErr != nil:
		res.fail(&Error{Status: StatusClientClosedRequest, Msg: "client closed request", Err: writeErr})
	case readErr != nil && ctx.Err() != nil:
		res.fail(contextError(ctx))
	case readErr != nil && isTimeout(readErr):
		res.fail(&Error{Status: http.StatusGatewayTimeout, Msg: "upstream went silent (UPSTREAM_IDLE_TIMEOUT)", Err: readErr})
	case readErr != nil:
		res.fail(&Error{Status: http.StatusBadGateway, Msg: "upstream response interrupted", Err: readErr})
	}
	return res, true
}

func (r *Result) fail(e *Error) {
	r.Status = e.Status
	r.Err = e
	r.ClientGone = e.Status == StatusClientClosedRequest
}

// upstreamRequest builds the upstream request; strip reports whether the
// body now asks for a usage chunk that the client did not ask for.
func (f *Forwarder) upstreamRequest(ctx context.Context, req *Request, info Info, up Upstream) (out *h1.Request, strip bool, err error) {
	base, err := f.baseURL(up.BaseURL)
	if err != nil {
		return nil, false, err
	}
	u := targetURL(base, up, req.Path, req.RawQuery, info.Model)
	body := req.Body
	if req.Method == http.MethodPost && up.Provider != store.ProviderAnthropic && isChatPath(req.Path) && info.Stream && !info.IncludeUsage {
		edited, err := jsonscan.WithIncludeUsage(body)
		if err != nil {
			f.log.DebugContext(ctx, "stream usage not requested upstream", "request_id", req.RequestID, "error", err)
		} else {
			body, strip = edited, true
		}
	}
	out = &h1.Request{Method: req.Method, URL: u, Header: upstreamHeader(req.Header, up, req.RequestID), Body: body}
	if f.tracer != nil {
		traceRequest(ctx, u, out.Header)
	}
	return out, strip, nil
}

// response is what forward reads of an upstream response, from either
// client.
type response struct {
	StatusCode    int
	Header        http.Header
	ContentLength int64
	Body          io.ReadCloser
}

// roundTrip sends out through the egress proxy's Transport when one is
// configured for its URL, else over a direct connection.
func (f *Forwarder) roundTrip(ctx context.Context, out *h1.Request) (response, error) {
	if f.proxy != nil {
		if p, err := f.proxy(out.URL); err != nil || p != nil {
			return f.roundTripProxied(ctx, out)
		}
	}
	resp, err := f.client.Do(ctx, out)
	if err != nil {
		return response{}, err
	}
	return response{resp.StatusCode, resp.Header, resp.ContentLength, resp.Body}, nil
}

func (f *Forwarder) roundTripProxied(ctx context.Context, out *h1.Request) (response, error) {
	var rd io.Reader
	if len(out.Body) > 0 {
		rd = bytes.NewReader(out.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, out.Method, "", rd)
	if err != nil {
		return response{}, err
	}
	hr.URL, hr.Host, hr.Header = out.URL, "", out.Header
	if _, ok := hr.Header["User-Agent"]; !ok {
		hr.Header["User-Agent"] = []string{""} // no Go default user agent
	}
	resp, err := f.transport.RoundTrip(hr)
	if err != nil {
		return response{}, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		return response{}, fmt.Errorf("%w: unrequested 101 Switching Protocols", h1.ErrProtocol)
	}
	body := resp.Body
	if f.idle > 0 {
		body = newIdleBody(body, f.idle)
	}
	return response{resp.StatusCode, resp.Header, resp.ContentLength, body}, nil
}

// idleBody cuts a body (by closing it) when no byte arrived for d: the
// egress-proxy path's UPSTREAM_IDLE_TIMEOUT, which h1 does with read
// deadlines.
type idleBody struct {
	io.ReadCloser
	d     time.Duration
	timer *time.Timer
	fired atomic.Bool
}

func newIdleBody(rc io.ReadCloser, d time.Duration) *idleBody {
	b := &idleBody{ReadCloser: rc, d: d}
	b.timer = time.AfterFunc(d, func() {
		b.fired.Store(true)
		rc.Close()
	})
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.fired.Load() {
		return n, errIdle
	}
	if n > 0 {
		b.timer.Reset(b.d)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	return b.ReadCloser.Close()
}

// errIdle is the body error after UPSTREAM_IDLE_TIMEOUT on the egress-proxy
// path; it is a timeout, as h1's deadline errors are.
var errIdle error = idleError{}

type idleError struct{}

func (idleError) Error() string   { return "upstream idle timeout" }
func (idleError) Timeout() bool   { return true }
func (idleError) Temporary() bool { return true }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// roundTripError maps a failure before any response header arrived.
func roundTripError(ctx context.Context, err error) *Error {
	if ctx.Err() != nil {
		return contextError(ctx)
	}
	var op *net.OpError
	var dns *net.DNSError
	if (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &dns) {
		return &Error{Status: http.StatusBadGateway, Msg: "upstream unreachable", Err: err}
	}
	if isTimeout(err) {
		return &Error{Status: http.StatusGatewayTimeout, Msg: "upstream timed out", Err: err}
	}
	if errors.Is(err, h1.ErrProtocol) {
		return &Error{Status: http.StatusBadGateway, Msg: "upstream sent a malformed response", Err: err}
	}
	return &Error{Status: http.StatusBadGateway, Msg: "upstream connection failed", Err: err}
}

// contextError maps a done ctx: cancelled means the client went away, a
// deadline set by the caller means the upstream was too slow.
func contextError(ctx context.Context) *Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Status: http.StatusGatewayTimeout, Msg: "upstream timed out", Err: ctx.Err()}
	}
	return &Error{Status: StatusClientClosedRequest, Msg: "client closed request", Err: context.Cause(ctx)}
}

func serverTiming(proxy, upstream time.Duration) string {
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(max(d, 0))/float64(time.Millisecond), 'f', 1, 64)
	}
	return "proxy;dur=" + ms(proxy) + ", upstream;dur=" + ms(upstream)
}

// copyBody relays body to w, feeding c when non-nil. With flush, it flushes
// after each read, so bodies of unknown length (chunked) stream.
func copyBody(w io.Writer, rc *http.ResponseController, body io.Reader, buf []byte, c *capture, flush bool) (readErr, writeErr error) {
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if c != nil {
				c.write(buf[:n])
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil, werr
			}
			if flush {
				if ferr := flushTo(rc); ferr != nil {
					return nil, ferr
				}
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

func flushTo(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
