package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/memory"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// proxy is the request pipeline of SPEC §6.1: authenticate → check the
// browser origin, the model allow-lists and the memory headers → admit
// (rate limits and quota) → answer from the response cache, or add memory
// context (a session's first request) and forward → observe → store in the
// cache → record (and hand the transcript to memory).
func (s *Server) proxy(c echo.Context) error {
	start := time.Now()
	r := c.Request()
	ctx := r.Context()
	reqID := c.Response().Header().Get(echo.HeaderXRequestID)

	if err := checkMethod(c); err != nil {
		return err
	}
	if r.Method == http.MethodOptions {
		return s.preflight(c)
	}
	if err := proxy.CheckPath(r.URL.Path, r.URL.RawPath); err != nil {
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_path",
			Message: "request path is not canonical (" + strings.TrimPrefix(err.Error(), proxy.ErrPath.Error()+": ") + ")", Err: err}
	}
	p, err := s.authenticate(c, reqID)
	if err != nil {
		return err
	}
	if err := checkOrigin(c, p); err != nil {
		return err
	}
	body, err := readBody(r, s.d.MaxRequestBytes)
	if err != nil {
		return err
	}
	info, err := inspect(r.URL.Path, body)
	if err != nil {
		return err
	}
	if err := checkModels(p, r.URL.Path, info.Model); err != nil {
		return err
	}
	turn, err := s.remember(c, p, info, body, reqID)
	if err != nil {
		return err
	}

	cl, cached := s.cacheRequest(r, p, info, body)

	limits := admission.Limits(&p.Token, &p.Project, int64(info.PromptEstimate+info.MaxTokens))
	if err := s.admit(ctx, &p.Token, limits); err != nil {
		return err
	}
	if cached && s.serveCached(c, cl, p, limits, start, reqID) {
		return nil
	}

	var answer *proxy.Answer
	if turn != nil {
		turn.Inject(ctx)
		if turn.Injected > 0 {
			c.Response().Header().Set(memory.HeaderInjected, memory.InjectedHeader(turn.Injected))
			// The answer depends on one user's memory, which the cache
			// key (the client's body) does not show: never store it.
			cached = false
		}
		body, answer = turn.Body, turn.Answer
	}
	up := proxy.Upstream{Provider: p.Project.Provider, BaseURL: p.Project.BaseURL, APIKey: p.APIKey, APIVersion: p.Project.APIVersion}
	preq := &proxy.Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header, Body: body,
		RequestID: reqID, Received: start, Answer: answer}
	var w http.ResponseWriter = c.Response()
	var models *bufferedResponse
	var tee *cacheWriter
	switch {
	case restricted(p) && isModelList(r.Method, r.URL.Path):
		models = newBufferedResponse()
		w = models
	case cached:
		s.cacheResult(cacheMiss)
		tee = &cacheWriter{ResponseWriter: w, max: s.d.CacheMaxEntryBytes}
		w = tee
	}
	res, wrote := s.d.Forwarder.Forward(ctx, w, preq, info, up)
	if models != nil {
		wrote = relayModels(c.Response(), models, p, &res)
	}
	if tee != nil {
		s.storeCached(ctx, cl, tee, &res, start)
	}

	turn.Finish(res.Status)
	s.d.Admission.Reconcile(ctx, limits, int64(res.Usage.TotalTokens))
	tokenID, agentID, userID := usageIdentity(p)
	s.d.Recorder.Usage(store.Usage{
		CreatedAt:        start.UTC(),
		RequestID:        reqID,
		ProjectID:        p.Project.ID,
		TokenID:          tokenID,
		AgentTokenID:     agentID,
		UserID:           userID,
		Model:            res.Model,
		Endpoint:         r.URL.Path,
		Status:           res.Status,
		PromptTokens:     res.Usage.PromptTokens,
		CompletionTokens: res.Usage.CompletionTokens,
		TotalTokens:      res.Usage.TotalTokens,
		Latency:          time.Since(start),
		TTFB:             res.TTFB,
		Streamed:         res.Streamed,
	})
	if m := s.d.Metrics; m != nil {
		m.ObserveUpstream(up.Provider, res.Upstream, res.TTFB, res.Overhead)
		m.AddTokens(res.Model, p.Project.ID, res.Usage.PromptTokens, res.Usage.CompletionTokens)
	}
	if res.Err != nil {
		if wrote {
			// The status line is gone; the client sees a cut stream. Log
			// through the error handler's rules without a second response.
			c.Response().Status = res.Status
		}
		return res.Err
	}
	return nil
}

// usageIdentity returns the token, agent token and person a usage row of
// p's request carries: a withering token's ID, or an agent token's ID and
// its person (SPEC §4).
func usageIdentity(p *auth.Principal) (tokenID, agentTokenID, userID string) {
	if p.Agent != nil {
		return "", p.Agent.ID, p.Identity
	}
	return p.Token.ID, "", ""
}

// remember reads the memory headers (SPEC §6.6): nothing without memory
// or X-Session-ID; otherwise a Turn that adds context to a session's first
// request once it is admitted (announced by X-Memory-Injected) and
// collects the answer for the transcript. A bad header is a 400 before any
// limit is spent.
func (s *Server) remember(c echo.Context, p *auth.Principal, info proxy.Info, body []byte, reqID string) (*memory.Turn, error) {
	if s.d.Memory == nil {
		return nil, nil
	}
	r := c.Request()
	t, err := s.d.Memory.Begin(memory.Request{Header: r.Header, Method: r.Method, Path: r.URL.Path, Body: body,
		User: memory.UserOf(p.Identity, p.Project.ID), UpstreamProjectID: p.Project.ID, Model: info.Model, RequestID: reqID})
	var bad *memory.BadHeaderError
	if errors.As(err, &bad) {
		return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_memory_header",
			Param: bad.Header, Message: bad.Header + ": " + err.Error(), Err: err}
	}
	return t, err
}

// authenticate resolves the client's token. Failures count against the
// client's address (AUTH_FAILURE_LIMIT); past the limit only tokens this
// process already knows are served, without a lookup, and the rest get
// 429 (SPEC §6.1).
func (s *Server) authenticate(c echo.Context, reqID string) (*auth.Principal, error) {
	r := c.Request()
	ip := c.RealIP()
	retryAfter, blocked := s.d.Failures.Blocked(ip)
	secret := credential(r.Header)
	if secret == "" {
		s.authFailure(c, reqID, ip, nil, "missing credentials")
		if blocked {
			return nil, tooManyFailures(retryAfter)
		}
		return nil, &Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "missing_api_key",
			Message: "missing token: send Authorization: Bearer <token> or x-api-key"}
	}
	authenticate := s.d.Auth.Authenticate
	if blocked {
		authenticate = s.d.Auth.AuthenticateCached
	}
	p, err := authenticate(r.Context(), secret)
	if err != nil {
		if !isAuthError(err) {
			return nil, err
		}
		s.authFailure(c, reqID, ip, err, err.Error())
		if blocked {
			return nil, tooManyFailures(retryAfter)
		}
		return nil, err
	}
	return p, nil
}

func tooManyFailures(retryAfter time.Duration) error {
	return &Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "too_many_auth_failures",
		Message: "too many failed authentications from this address; retry later", RetryAfter: retryAfter}
}

func isAuthError(err error) bool {
	return errors.Is(err, auth.ErrUnknownToken) || errors.Is(err, auth.ErrExpired) ||
		errors.Is(err, auth.ErrRevoked) || errors.Is(err, auth.ErrProjectInactive)
}

// authFailure counts and audits a failed authentication (the limiter
// bounds every string and writes summary rows for repeats).
func (s *Server) authFailure(c echo.Context, reqID, ip string, err error, reason string) {
	r := c.Request()
	f := auth.Failure{IP: ip, Method: r.Method, Path: r.URL.Path, Reason: reason, RequestID: reqID}
	var denied *auth.DeniedError
	if errors.As(err, &denied) {
		f.TokenID, f.ProjectID = denied.TokenID, denied.ProjectID
	}
	s.d.Failures.Fail(r.Context(), f)
}

// forwardedMethods are the methods sent upstream (SPEC §6.1); OPTIONS is
// answered here.
const forwardedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE"

// checkMethod refuses the methods that are neither forwarded nor OPTIONS:
// TRACE would echo the upstream key back, CONNECT and WebDAV verbs have no
// meaning for an LLM API.
func checkMethod(c echo.Context) error {
	switch c.Request().Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return nil
	}
	c.Response().Header().Set(echo.HeaderAllow, forwardedMethods+", OPTIONS")
	return &Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: "method not allowed; allowed: " + forwardedMethods + ", OPTIONS"}
}

// credential returns the bearer token, else the x-api-key value; "" when
// neither is present. An Authorization of another scheme (Basic) does not
// hide an x-api-key.
func credential(h http.Header) string {
	if v := h.Get(echo.HeaderAuthorization); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return strings.TrimSpace(h.Get("x-api-key"))
}

// readBody reads the whole client body, refusing more than max bytes and a
// body that does not arrive within RequestBodyTimeout.
func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	tooLarge := &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
		Message: "request body exceeds MAX_REQUEST_BYTES"}
	if max > 0 && r.ContentLength > max {
		return nil, tooLarge
	}
	rd := io.Reader(r.Body)
	if max > 0 {
		rd = io.LimitReader(r.Body, max+1)
	}
	var (
		body []byte
		err  error
	)
	if n := r.ContentLength; n > 0 {
		// The usual case: one allocation of the declared size (net/http
		// ends the body there, so it cannot be longer).
		body = make([]byte, n)
		_, err = io.ReadFull(rd, body)
	} else {
		body, err = io.ReadAll(rd)
	}
	if errors.Is(err, errBodyTimeout) {
		return nil, bodyTimeout(err)
	}
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "bad_body",
			Message: "could not read the request body", Err: err}
	}
	if max > 0 && int64(len(body)) > max {
		return nil, tooLarge
	}
	return body, nil
}

// inspect reads the body the way the upstream will, whatever the
// Content-Type says (SPEC §6.1): a JSON endpoint's body must be a JSON
// object, and any other body that starts like one is inspected too, so a
// text/plain label cannot skip usage accounting.
func inspect(path string, body []byte) (proxy.Info, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || (!jsonEndpoint(path) && trimmed[0] != '{') {
		return proxy.Info{}, nil
	}
	info, err := proxy.Inspect(body)
	if err != nil && !jsonEndpoint(path) && errors.Is(err, proxy.ErrBadJSON) {
		return proxy.Info{}, nil // not JSON after all: relayed uninspected
	}
	if err != nil {
		code := "invalid_json"
		if errors.Is(err, proxy.ErrDuplicateKey) || errors.Is(err, proxy.ErrKeyCase) {
			code = "ambiguous_json" // valid JSON that upstreams read differently
		}
		return proxy.Info{}, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code,
			Message: "request body: " + err.Error(), Err: err}
	}
	return info, nil
}

// jsonEndpoint reports whether a /v1 path takes a JSON object body.
func jsonEndpoint(path string) bool {
	switch strings.TrimPrefix(path, "/v1") {
	case "/chat/completions", "/completions", "/embeddings", "/responses", "/messages":
		return true
	}
	return false
}

// admit asks the admission for the request's limits and quota, counts the
// decision in the metrics and turns a refusal into its response.
func (s *Server) admit(ctx context.Context, t *store.Token, limits []ratelimit.Request) error {
	err := s.d.Admission.Admit(ctx, t, limits)
	var limited *admission.LimitedError
	switch {
	case err == nil:
		if len(limits) > 0 {
			s.rateDecision("rate", "allowed")
		}
		if t.MaxRequests != nil {
			s.rateDecision("quota", "allowed")
		}
		return nil
	case errors.As(err, &limited):
		s.rateDecision("rate", "limited")
		return &Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited",
			Message: limited.Error(), RetryAfter: limited.RetryAfter, Err: err}
	case errors.Is(err, store.ErrQuotaExceeded):
		s.rateDecision("quota", "limited")
		return err // errorTable: 429 insufficient_quota, final
	case errors.Is(err, ratelimit.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "rate_limiter_unavailable",
			Message: "rate limiter unavailable; retry shortly", RetryAfter: time.Second, Err: err}
	default:
		return &Error{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "quota_unavailable",
			Message: "the request quota cannot be checked right now; retry shortly", RetryAfter: time.Second, Err: err}
	}
}

func (s *Server) rateDecision(limit, decision string) {
	if s.d.Metrics != nil {
		s.d.Metrics.RateDecision(limit, decision)
	}
}
