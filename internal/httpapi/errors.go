package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
)

// Error is a request error with everything the OpenAI error body needs.
// Handlers return it (or a sentinel the error handler knows) and never write
// error responses themselves.
type Error struct {
	Status     int
	Type       string // OpenAI error type, e.g. "invalid_request_error"
	Code       string // machine-readable code, e.g. "invalid_api_key"
	Message    string // safe to show to the client
	Param      string // the offending field, for validation errors
	RetryAfter time.Duration
	// Final marks a refusal that retrying cannot change: the response
	// carries x-should-retry: false, which the official OpenAI and
	// Anthropic SDKs honour over their own retry rules (they retry every
	// 429 otherwise).
	Final bool
	Err   error // internal cause, logged for 5xx, never sent
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// errBadRequest is a 400 naming the offending field.
func errBadRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_request",
		Param: param, Message: fmt.Sprintf(format, args...)}
}

// errorTable maps the domain sentinels to responses, in one place.
var errorTable = []struct {
	target error
	resp   Error
}{
	{auth.ErrUnknownToken, Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key", Message: "invalid or unknown token"}},
	{auth.ErrAgentExpired, Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "token_expired",
		Message: "agent token expired; sign in again: POST /auth/device/code"}},
	{auth.ErrNoAgentProject, Error{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "sso_project_missing",
		Message: "the project that serves agent tokens (SSO_PROJECT) does not exist yet"}},
	{auth.ErrExpired, Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "token_expired", Message: "token expired"}},
	{auth.ErrRevoked, Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "token_revoked", Message: "token revoked"}},
	{auth.ErrProjectInactive, Error{Status: http.StatusForbidden, Type: "permission_error", Code: "project_inactive", Message: "the token's project is inactive"}},
	{store.ErrNotFound, Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Message: "not found"}},
	{store.ErrConflict, Error{Status: http.StatusConflict, Type: "invalid_request_error", Code: "conflict", Message: "conflicts with an existing record"}},
	// A spent max_requests never comes back: OpenAI's own answer for an
	// exhausted quota, without Retry-After.
	{store.ErrQuotaExceeded, Error{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota", Final: true,
		Message: "the token's request quota (max_requests) is used up"}},
	{store.ErrPoolExhausted, Error{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "database_busy", Message: "the database is overloaded; retry shortly"}},
}

// toError turns any handler error into an *Error.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var pe *proxy.Error
	if errors.As(err, &pe) {
		out := &Error{Status: pe.Status, Type: "api_error", Message: pe.Msg, Err: pe.Err}
		switch pe.Status {
		case http.StatusGatewayTimeout:
			out.Code = "upstream_timeout"
		case proxy.StatusClientClosedRequest:
			out.Code = "client_closed_request"
		default:
			out.Code = "upstream_unreachable"
		}
		return out
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		out := &Error{Status: he.Code, Type: "invalid_request_error", Code: codeForStatus(he.Code), Message: fmt.Sprint(he.Message), Err: he.Internal}
		if he.Code >= 500 {
			out.Type = "api_error"
		}
		return out
	}
	for _, row := range errorTable {
		if errors.Is(err, row.target) {
			out := row.resp
			out.Err = err
			return &out
		}
	}
	return &Error{Status: http.StatusInternalServerError, Type: "api_error", Code: "internal_error", Message: "internal error", Err: err}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusUnauthorized:
		return "unauthorized"
	default:
		return "http_" + strconv.Itoa(status)
	}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// errorHandler is the one place request errors become responses, and the
// only place they are logged (5xx only; 499 is logged at info).
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		e := toError(err)
		reqID := c.Response().Header().Get(echo.HeaderXRequestID)
		switch {
		case e.Status == proxy.StatusClientClosedRequest:
			logger.Info("client closed request", requestIDs(c, "path", c.Path())...)
		case e.Status >= 500:
			logger.Error("request failed", requestIDs(c, "path", c.Path(), "status", e.Status, "err", err)...)
		}
		if c.Response().Committed {
			if e.Status != proxy.StatusClientClosedRequest {
				// The status line went out and the body broke off (an
				// upstream cut, UPSTREAM_IDLE_TIMEOUT): end the
				// connection without the terminating chunk (HTTP/2:
				// reset the stream), so the client sees a truncated
				// answer rather than a complete-looking one.
				panic(http.ErrAbortHandler)
			}
			return
		}
		if e.RetryAfter > 0 {
			secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
			c.Response().Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
		if e.Final {
			c.Response().Header().Set("X-Should-Retry", "false")
		}
		body := errorBody{Error: errorDetail{Message: e.Message, Type: e.Type, Code: e.Code}}
		if e.Param != "" {
			body.Error.Param = &e.Param
		}
		var werr error
		if c.Request().Method == http.MethodHead {
			werr = c.NoContent(e.Status)
		} else {
			werr = c.JSON(e.Status, body)
		}
		if werr != nil {
			logger.Debug("write error response", "request_id", reqID, "err", werr)
		}
	}
}

// requestIDs prepends request_id, and trace_id when the request is traced,
// to log arguments.
func requestIDs(c echo.Context, args ...any) []any {
	ids := []any{"request_id", c.Response().Header().Get(echo.HeaderXRequestID)}
	if id := telemetry.TraceID(c.Request().Context()); id != "" {
		ids = append(ids, "trace_id", id)
	}
	return append(ids, args...)
}
