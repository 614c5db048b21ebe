// Package httpapi is the HTTP surface of the proxy (SPEC §6): the echo
// server, its routes, the proxy pipeline, the management API, health and
// metrics, and the one error handler.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/console"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/memory"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/sso"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// Deps are the collaborators the server is wired with; cmd/proxy picks the
// implementations.
type Deps struct {
	// Database is pinged by /readyz; nil leaves the database out of it.
	Database Pinger
	Auth     *auth.Authenticator
	Failures FailureLimiter
	// Origins answers CORS preflights; nil gives them no CORS headers.
	Origins   Origins
	Admission Admission
	Forwarder *proxy.Forwarder
	Recorder  *usage.Recorder
	// Cache is the response cache; nil turns it off.
	Cache cache.Cache
	// Memory captures sessions and injects their summaries; nil turns
	// memory off (MEMORY_ENABLED=false) at no cost.
	Memory  *memory.Memory
	Manager *manage.Service
	// Console serves /console; nil leaves it unrouted (404).
	Console *console.Console
	// SSO serves the device login under /auth; nil (SSO_ISSUER unset)
	// leaves those routes out.
	SSO     *sso.Service
	Metrics *telemetry.Metrics
	Logger  *slog.Logger

	// ManagementToken enables /manage when non-empty.
	ManagementToken string
	// MetricsToken, when non-empty, guards /metrics and adds project names.
	MetricsToken string
	// MaxRequestBytes bounds client request bodies (413 beyond it).
	MaxRequestBytes int64
	// CacheMaxEntryBytes bounds the answers stored in Cache.
	CacheMaxEntryBytes int64
	// RequestBodyTimeout bounds the arrival of a whole request body, on
	// every route, authenticated or not (408 beyond it); zero means no
	// limit.
	RequestBodyTimeout time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (audit, failed-authentication limits); empty means the peer address
	// is the client.
	TrustedProxies []netip.Prefix
	// Checks are readiness conditions besides the database (Redis, the
	// schema), reported by name in the /readyz body.
	Checks []ReadyCheck
	// TracerProvider, when set, gives every request a server span; nil
	// keeps tracing off the request path.
	TracerProvider trace.TracerProvider
}

// FailureLimiter counts failed authentications per client address and
// audits them (*auth.FailureLimiter); Blocked does no I/O.
type FailureLimiter interface {
	Blocked(ip string) (retryAfter time.Duration, blocked bool)
	Fail(ctx context.Context, f auth.Failure)
}

// Admission decides a request's rate limits and its token's max_requests
// quota, all or nothing (*admission.Split without Redis,
// *admission.Combined with it; see package admission for the errors).
// Admit also counts the request in the token's request_count. Reconcile
// settles the tokens/min estimates of an admitted request once its real
// token count is known; it does not wait on the network.
type Admission interface {
	Admit(ctx context.Context, t *store.Token, limits []ratelimit.Request) error
	Reconcile(ctx context.Context, limits []ratelimit.Request, actual int64)
}

// Server is the proxy's HTTP handler.
type Server struct {
	d        Deps
	e        *echo.Echo
	draining atomic.Bool
	inflight sync.WaitGroup // handlers running, for Wait
}

// New builds the server and registers every route.
func New(d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(d.Logger)
	e.IPExtractor = ipExtractor(d.TrustedProxies)
	s := &Server{d: d, e: e}
	s.routes()
	return s
}

// ServeHTTP makes the Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.e.ServeHTTP(w, r) }

// Wait blocks until every handler has returned or ctx ends. After the HTTP
// server was closed with streams still running, it lets those handlers
// record their usage before the recorder stops (SPEC §6.4).
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// track counts running handlers for Wait.
func (s *Server) track(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s.inflight.Add(1)
		defer s.inflight.Done()
		return next(c)
	}
}

// ipExtractor returns the client address: the peer's, or with trusted
// proxies the right-most X-Forwarded-For entry that is not one of them.
// Echo's defaults (loopback, link-local and private ranges trusted) are
// switched off: only the configured ranges are proxies.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// maxRequestTarget bounds the request line's target (414 beyond it): every
// audited or logged path comes from it.
const maxRequestTarget = 8 << 10

// Protocol bounds of the HTTP server (SPEC §6.1).
const (
	// maxHeaderBytes bounds a request's line and headers (net/http answers
	// 431 beyond it).
	maxHeaderBytes = 64 << 10
	// headerTimeout bounds the arrival of a request's line and headers.
	headerTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections idle this long.
	idleTimeout = 2 * time.Minute
)

// HTTPServer returns the http.Server that serves s: request heads must
// arrive within 10 s and whole requests within RequestBodyTimeout, counted
// from their first byte (net/http's ReadTimeout; the handler lifts that
// deadline once the body is in, so a long stream is not cut by it), and
// heads are bounded. There is no WriteTimeout: it would cut long streams.
func (s *Server) HTTPServer(errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       s.d.RequestBodyTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errorLog,
	}
}

// boundRequest refuses an over-long request target and manages the
// whole-request read deadline HTTPServer sets: a request without a body
// lifts it at once, one with a body when the body has arrived.
func (s *Server) boundRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if len(r.RequestURI) > maxRequestTarget {
			c.Response().Header().Set(echo.HeaderConnection, "close")
			return &Error{Status: http.StatusRequestURITooLong, Type: "invalid_request_error", Code: "uri_too_long",
				Message: "request target longer than " + strconv.Itoa(maxRequestTarget) + " bytes"}
		}
		if s.d.RequestBodyTimeout > 0 {
			rc := http.NewResponseController(c.Response())
			if r.Body == nil || r.Body == http.NoBody {
				_ = rc.SetReadDeadline(time.Time{})
			} else {
				r.Body = &timedBody{ReadCloser: r.Body, rc: rc}
			}
		}
		return next(c)
	}
}

// errBodyTimeout is wrapped by body reads that hit RequestBodyTimeout.
var errBodyTimeout = errors.New("request body timeout")

// bodyTimeout is the response to a body read that failed with
// errBodyTimeout; net/http closes the connection after it.
func bodyTimeout(err error) *Error {
	return &Error{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "request_timeout",
		Message: "the request body did not arrive within REQUEST_BODY_TIMEOUT", Err: err}
}

// timedBody reads a request body under the whole-request read deadline and
// lifts the deadline once the body has arrived, so a long stream's response
// is not cut by it (net/http's background read would otherwise fail at the
// deadline and cancel the request). A body that is never read to its end
// keeps the deadline, which then bounds net/http's discarding of it.
type timedBody struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%w: %w", errBodyTimeout, err)
	}
	return n, err
}

// SetDraining makes /readyz answer 503 so load balancers stop sending
// traffic before the listener closes (SPEC §6.4).
func (s *Server) SetDraining() { s.draining.Store(true) }

// requestID gives every response an X-Request-ID: the client's when it is a
// sane value, a fresh random one otherwise.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !saneRequestID(id) {
			id = newRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if ch <= ' ' || ch > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recoverPanics turns a panic into a logged 500; the client never sees a
// stack trace.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.d.Logger.Error("panic in handler", requestIDs(c, "path", c.Path(), "panic", r)...)
				err = &Error{Status: http.StatusInternalServerError, Type: "api_error", Code: "internal_error", Message: "internal error"}
			}
		}()
		return next(c)
	}
}

// observe records request count, latency and in-flight figures by route.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	if s.d.Metrics == nil {
		return next
	}
	return func(c echo.Context) error {
		start := time.Now()
		s.d.Metrics.InFlight.Inc()
		err := next(c)
		s.d.Metrics.InFlight.Dec()
		status := c.Response().Status
		if err != nil {
			status = toError(err).Status
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		s.d.Metrics.ObserveRequest(route, c.Request().Method, status, time.Since(start))
		return err
	}
}

// traceRequests gives each request a server span named by its route
// pattern, continuing the client's W3C trace context; handlers and the
// error handler find it in the request context.
func (s *Server) traceRequests(next echo.HandlerFunc) echo.HandlerFunc {
	if s.d.TracerProvider == nil {
		return next
	}
	tracer := s.d.TracerProvider.Tracer("github.com/llmproxy/llm-proxy/internal/httpapi")
	prop := telemetry.Propagator()
	return func(c echo.Context) error {
		r := c.Request()
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		name, route := r.Method, c.Path()
		attrs := []attribute.KeyValue{attribute.String("http.request.method", r.Method)}
		if route != "" {
			name += " " + route
			attrs = append(attrs, attribute.String("http.route", route))
		}
		ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		c.SetRequest(r.WithContext(ctx))
		err := next(c)
		status := c.Response().Status
		if err != nil {
			status = toError(err).Status
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
			span.SetStatus(codes.Error, "")
		}
		return err
	}
}
