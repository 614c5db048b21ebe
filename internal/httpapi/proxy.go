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

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// proxy is the request pipeline of SPEC §6.1: authenticate → check limits →
// count the quota → forward → observe → record.
func (s *Server) proxy(c echo.Context) error {
	start := time.Now()
	r := c.Request()
	ctx := r.Context()
	reqID := c.Response().Header().Get(echo.HeaderXRequestID)

	if err := checkMethod(c); err != nil {
		return err
	}
	if r.Method == http.MethodOptions {
		return c.NoContent(http.StatusNoContent)
	}
	if err := proxy.CheckPath(r.URL.Path, r.URL.RawPath); err != nil {
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_path",
			Message: "request path is not canonical (" + strings.TrimPrefix(err.Error(), proxy.ErrPath.Error()+": ") + ")", Err: err}
	}
	p, err := s.authenticate(c, reqID)
	if err != nil {
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

	limits := rateRequests(p, info)
	if err := s.admit(ctx, p, limits, start); err != nil {
		return err
	}

	up := proxy.Upstream{Provider: p.Project.Provider, BaseURL: p.Project.BaseURL, APIKey: p.APIKey, APIVersion: p.Project.APIVersion}
	preq := &proxy.Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header, Body: body,
		RequestID: reqID, Received: start}
	res, wrote := s.d.Forwarder.Forward(ctx, c.Response(), preq, info, up)

	s.reconcileTokens(ctx, limits, res.Usage.TotalTokens)
	s.d.Recorder.Usage(store.Usage{
		CreatedAt:        start.UTC(),
		RequestID:        reqID,
		ProjectID:        p.Project.ID,
		TokenID:          p.Token.ID,
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

// rateRequests lists the per-minute budgets this request spends: requests
// and tokens, per token and per project. The token cost is an estimate
// (prompt + max_tokens) reconciled after the response.
func rateRequests(p *auth.Principal, info proxy.Info) []ratelimit.Request {
	estimate := int64(info.PromptEstimate + info.MaxTokens)
	if estimate < 1 {
		estimate = 1
	}
	var reqs []ratelimit.Request
	add := func(key string, limit int, cost int64) {
		if limit > 0 {
			reqs = append(reqs, ratelimit.Request{Key: key, Limit: int64(limit), Cost: cost})
		}
	}
	add("tok:"+p.Token.ID+":rpm", p.Token.RPMLimit, 1)
	add("prj:"+p.Project.ID+":rpm", p.Project.RPMLimit, 1)
	add("tok:"+p.Token.ID+":tpm", p.Token.TPMLimit, estimate)
	add("prj:"+p.Project.ID+":tpm", p.Project.TPMLimit, estimate)
	return reqs
}

// combinedQuota is a QuotaCounter that decides the rate limits in the same
// atomic step (*quota.Redis: one round trip per request).
type combinedQuota interface {
	ConsumeWith(ctx context.Context, t *store.Token, reqs ...ratelimit.Request) (ratelimit.Decision, error)
}

// admit decides the request's rate limits and max_requests quota, all or
// nothing: a refusal consumes none of them.
func (s *Server) admit(ctx context.Context, p *auth.Principal, limits []ratelimit.Request, now time.Time) error {
	if cq, ok := s.d.Quota.(combinedQuota); ok && p.Token.MaxRequests != nil {
		d, err := cq.ConsumeWith(ctx, &p.Token, limits...)
		if err != nil {
			return s.quotaError(err)
		}
		if err := s.rateResult(d, nil); err != nil {
			return err
		}
		s.rateDecision("quota", "allowed")
		return nil
	}
	if len(limits) > 0 {
		if err := s.rateResult(s.d.Limiter.Allow(ctx, limits...)); err != nil {
			return err
		}
	}
	if err := s.countQuota(ctx, p, now); err != nil {
		s.refund(limits)
		return err
	}
	return nil
}

// rateResult turns a rate-limit decision into nil or a request error.
func (s *Server) rateResult(d ratelimit.Decision, err error) error {
	if err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "rate_limiter_unavailable",
			Message: "rate limiter unavailable; retry shortly", RetryAfter: time.Second, Err: err}
	}
	if !d.Allowed {
		s.rateDecision("rate", "limited")
		return &Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited",
			Message: "rate limit exceeded (" + limitName(d.Key) + ")", RetryAfter: d.RetryAfter, Err: ratelimit.ErrLimited}
	}
	s.rateDecision("rate", "allowed")
	return nil
}

// limitName describes a limiter key without the IDs in it.
func limitName(key string) string {
	scope, kind := "token", key[strings.LastIndexByte(key, ':')+1:]
	if strings.HasPrefix(key, "prj:") {
		scope = "project"
	}
	if kind == "tpm" {
		return scope + " tokens per minute"
	}
	return scope + " requests per minute"
}

// countQuota counts the request against max_requests through the quota
// counter (exact across replicas); tokens without a quota are counted in
// batches.
func (s *Server) countQuota(ctx context.Context, p *auth.Principal, now time.Time) error {
	if p.Token.MaxRequests == nil {
		s.d.Recorder.Touch(p.Token.ID, now)
		return nil
	}
	if err := s.d.Quota.Consume(ctx, &p.Token); err != nil {
		return s.quotaError(err)
	}
	s.rateDecision("quota", "allowed")
	return nil
}

// quotaError turns a quota counter's error into a request error.
func (s *Server) quotaError(err error) error {
	if errors.Is(err, store.ErrQuotaExceeded) {
		s.rateDecision("quota", "limited")
		return err // errorTable: 429 insufficient_quota, final
	}
	return &Error{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "quota_unavailable",
		Message: "the request quota cannot be checked right now; retry shortly", RetryAfter: time.Second, Err: err}
}

// refund gives back what admit spent when the request is refused later.
func (s *Server) refund(reqs []ratelimit.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, r := range reqs {
		if err := s.d.Limiter.Adjust(ctx, r.Key, r.Limit, -r.Cost); err != nil {
			s.d.Logger.Warn("refund rate limit", "err", err)
		}
	}
}

// reconcileTokens replaces the tokens/min estimate with the real count,
// also for a client that went away (hence WithoutCancel). Both limiters
// adjust without waiting on the network (Redis defers the write).
func (s *Server) reconcileTokens(ctx context.Context, reqs []ratelimit.Request, actual int) {
	ctx = context.WithoutCancel(ctx)
	for _, r := range reqs {
		if !strings.HasSuffix(r.Key, ":tpm") {
			continue
		}
		if delta := int64(actual) - r.Cost; delta != 0 {
			if err := s.d.Limiter.Adjust(ctx, r.Key, r.Limit, delta); err != nil {
				s.d.Logger.Warn("reconcile tokens per minute", "err", err)
			}
		}
	}
}

func (s *Server) rateDecision(limit, decision string) {
	if s.d.Metrics != nil {
		s.d.Metrics.RateDecision(limit, decision)
	}
}
