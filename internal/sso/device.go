package sso

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// GrantType is the device code grant of RFC 8628.
const GrantType = "urn:ietf:params:oauth:grant-type:device_code"

const (
	// maxBody bounds the device endpoints' request bodies.
	maxBody = 16 << 10
	// maxLabel bounds a device label (client_name), in bytes.
	maxLabel = 200
)

// oauthError is the OAuth error body (RFC 6749 §5.2).
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeOAuthError(c echo.Context, status int, code, desc string) error {
	noStore(c)
	return c.JSON(status, oauthError{Error: code, Description: desc})
}

func noStore(c echo.Context) {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// params reads the form-encoded (RFC 8628) or JSON body of a device
// endpoint. A field given twice is refused: two readers could take either.
func params(c echo.Context) (map[string]string, error) {
	r := c.Request()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, errors.New("could not read the request body")
	}
	if len(body) > maxBody {
		return nil, errors.New("request body too large")
	}
	out := map[string]string{}
	mt, _, _ := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if mt == echo.MIMEApplicationJSON {
		return jsonParams(body)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errors.New("body is not form-encoded")
	}
	for k, v := range vals {
		if len(v) > 1 {
			return nil, errors.New(k + " given more than once")
		}
		out[k] = v[0]
	}
	return out, nil
}

// jsonParams reads a JSON object's string members; other members are
// ignored, and a member given twice is refused (decoders disagree on which
// copy wins).
func jsonParams(body []byte) (map[string]string, error) {
	notObject := errors.New("body is not a JSON object")
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notObject
	}
	out := map[string]string{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notObject
		}
		key, _ := tok.(string)
		if seen[key] {
			return nil, errors.New(key + " given more than once")
		}
		seen[key] = true
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, notObject
		}
		if s, ok := v.(string); ok {
			out[key] = s
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, notObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, notObject
	}
	return out, nil
}

// deviceCodeResponse is the answer of POST /auth/device/code.
type deviceCodeResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

// DeviceCode serves POST /auth/device/code: it starts a device login and
// answers the codes (RFC 8628 §3.2). client_name becomes the device's
// label.
func (s *Service) DeviceCode(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := params(c)
	if err != nil {
		return writeOAuthError(c, http.StatusBadRequest, "invalid_request", err.Error())
	}
	label, ok := cleanLabel(p["client_name"])
	if !ok {
		return writeOAuthError(c, http.StatusBadRequest, "invalid_request", "client_name: at most 200 bytes of printable text")
	}
	// Limited before the project lookup, so a client past its budget costs
	// no database round trip.
	wait, err := s.startWait(ctx, c.RealIP())
	if err != nil {
		return s.unavailable(c, err)
	}
	if wait > 0 {
		// slow_down is the device flow's own code for "too fast" (RFC 8628
		// §3.5), which every device-flow client already knows; an
		// unregistered code such as rate_limited is known to none.
		// Clients take any error from this endpoint as final and show its
		// code and description (golang.org/x/oauth2's DeviceAuth, proxy
		// login), so the description says how long to wait, and
		// Retry-After says it to clients that honour it.
		setRetryAfter(c, wait)
		return writeOAuthError(c, http.StatusTooManyRequests, "slow_down",
			"too many device logins were started from your address; retry in "+formatWait(wait))
	}
	if err := s.checkProject(ctx); err != nil {
		return s.unavailable(c, err)
	}
	deviceCode, err := randomString(32)
	if err != nil {
		return s.unavailable(c, err)
	}
	userCode, err := newUserCode()
	if err != nil {
		return s.unavailable(c, err)
	}
	now := s.clock()
	pa := &store.PendingAuthorization{
		ID: newID(), DeviceCodeHash: hash(deviceCode), UserCodeHash: hash(userCode), Status: store.PendingStatusPending,
		Label: label, ClientIP: auth.Bound(c.RealIP(), 64), CreatedAt: now, ExpiresAt: now.Add(s.cfg.CodeTTL),
	}
	if err := s.st.CreatePendingAuthorization(ctx, pa); err != nil {
		return s.unavailable(c, err)
	}
	verify := s.publicURL(c.Request()) + "/auth/device"
	noStore(c)
	return c.JSON(http.StatusOK, deviceCodeResponse{
		DeviceCode:              deviceCode,
		UserCode:                displayUserCode(userCode),
		VerificationURI:         verify,
		VerificationURIComplete: verify + "?user_code=" + url.QueryEscape(displayUserCode(userCode)),
		ExpiresIn:               int(s.cfg.CodeTTL.Seconds()),
		Interval:                int(s.cfg.Interval.Seconds()),
	})
}

// tokenResponse is the answer of a redeemed device code.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}

// DeviceToken serves POST /auth/device/token: one poll of a device code
// (RFC 8628 §3.4). The agent token is in the body of the one answer that
// redeems the code, and nowhere else.
func (s *Service) DeviceToken(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	p, err := params(c)
	if err != nil {
		return writeOAuthError(c, http.StatusBadRequest, "invalid_request", err.Error())
	}
	if p["grant_type"] != GrantType {
		return writeOAuthError(c, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be "+GrantType)
	}
	code := p["device_code"]
	if code == "" || len(code) > 128 {
		return writeOAuthError(c, http.StatusBadRequest, "invalid_request", "device_code is required")
	}
	if err := s.checkProject(ctx); err != nil {
		return s.unavailable(c, err)
	}
	secret, prefix, tokHash, err := auth.NewAgentToken()
	if err != nil {
		return s.unavailable(c, err)
	}
	now := s.clock()
	tok := &store.AgentToken{ID: newID(), Hash: tokHash, Prefix: prefix, IsActive: true, CreatedAt: now,
		LastAuthenticatedAt: &now, AuthExpiresAt: now.Add(s.cfg.TokenTTL)}
	outcome, err := s.st.PollDeviceCode(ctx, hash(code), now, s.cfg.Interval, tok)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return writeOAuthError(c, http.StatusBadRequest, "invalid_grant", "unknown or already redeemed device code")
	case err != nil:
		return s.unavailable(c, err)
	}
	switch outcome {
	case store.PollPending:
		return writeOAuthError(c, http.StatusBadRequest, "authorization_pending", "")
	case store.PollSlowDown:
		return writeOAuthError(c, http.StatusBadRequest, "slow_down", "poll at most every interval seconds")
	case store.PollExpired:
		return writeOAuthError(c, http.StatusBadRequest, "expired_token", "the device code expired; request a new one")
	case store.PollDenied:
		return writeOAuthError(c, http.StatusBadRequest, "access_denied", "")
	}
	ev := s.auditEvent(r, c.Response().Header().Get(echo.HeaderXRequestID), c.RealIP(), tok.Email, "agent_token.issue", store.OutcomeSuccess)
	ev.Metadata = map[string]any{"agent_token_id": tok.ID, "user_id": tok.UserID(), "label": tok.Label}
	s.audit.Audit(ev)
	noStore(c)
	return c.JSON(http.StatusOK, tokenResponse{AccessToken: secret, TokenType: "Bearer", ExpiresIn: int(s.cfg.TokenTTL.Seconds())})
}

// unavailable answers a device endpoint that cannot serve now: 503 while
// SSO_PROJECT names no project or the start limiter cannot decide (Redis
// away while REDIS_FAIL_OPEN is false, as the proxy's rate limits), else
// 500. All but the first are logged; the cause is not sent.
func (s *Service) unavailable(c echo.Context, err error) error {
	if errors.Is(err, errNoProject) {
		c.Response().Header().Set("Retry-After", "60")
		return writeOAuthError(c, http.StatusServiceUnavailable, "temporarily_unavailable",
			"device login is not ready: the project named by SSO_PROJECT does not exist yet")
	}
	s.log.ErrorContext(c.Request().Context(), "device login failed", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
		"path", c.Path(), "err", err)
	if errors.Is(err, ratelimit.ErrUnavailable) {
		c.Response().Header().Set("Retry-After", "1")
		return writeOAuthError(c, http.StatusServiceUnavailable, "temporarily_unavailable",
			"device login cannot be rate limited right now; retry shortly")
	}
	return writeOAuthError(c, http.StatusInternalServerError, "server_error", "internal error")
}

// cleanLabel trims a device label and refuses one that is too long or
// holds control characters.
func cleanLabel(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) > maxLabel || strings.ContainsFunc(s, unicode.IsControl) {
		return "", false
	}
	return strings.ToValidUTF8(s, "\uFFFD"), true
}
