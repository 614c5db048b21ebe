package sso

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

//go:embed templates/pages.html
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/pages.html"))

// Cookies of the pages. Both are HttpOnly and scoped to /auth. The session
// cookie is SameSite=Lax because the provider's redirect to /auth/callback
// is a cross-site navigation that must carry it; the CSRF cookie of the
// code form is SameSite=Strict.
const (
	sessionCookie = "llmproxy_sso"
	csrfCookie    = "llmproxy_csrf"
	cookiePath    = "/auth"
)

// pageData is what the templates print; html/template escapes all of it.
type pageData struct {
	Title     string
	Problem   string // enter: an error above the form
	Message   string // message: the text
	Wait      string // message: how long a block lasts
	Again     bool   // message: offer to enter a code again
	CSRF      string
	UserCode  string
	Email     string
	Label     string
	ClientIP  string
	Requested string
	Devices   []deviceRow
	Link      string // continue: where the browser goes on
}

type deviceRow struct {
	ID, Label, Prefix, Created, Expires, Status string
	Active                                      bool
}

// render writes a page. Pages are never cached or framed, and run no
// script.
func (s *Service) render(c echo.Context, status int, name string, d pageData) error {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, d); err != nil {
		s.log.ErrorContext(c.Request().Context(), "render page", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"page", name, "err", err)
		return c.String(http.StatusInternalServerError, "internal error")
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	return c.HTMLBlob(status, buf.Bytes())
}

// message renders a page with one message; problem marks it as an error.
func (s *Service) message(c echo.Context, status int, title, msg string, problem bool) error {
	d := pageData{Title: title, Message: msg, Again: problem}
	if problem {
		d.Problem = "1"
	}
	return s.render(c, status, "message", d)
}

// failed renders the page of an internal error; the cause is logged, not
// shown.
func (s *Service) failed(c echo.Context, err error) error {
	status, msg := http.StatusInternalServerError, "Something went wrong on our side. Try again in a moment."
	switch {
	case errors.Is(err, errProvider):
		status, msg = http.StatusBadGateway, "The identity provider cannot be reached right now. Try again in a moment."
	case errors.Is(err, ratelimit.ErrUnavailable):
		setRetryAfter(c, time.Second)
		status, msg = http.StatusServiceUnavailable, "Sign-in is paused for a moment. Try again shortly."
	}
	s.log.ErrorContext(c.Request().Context(), "device login page failed", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
		"path", c.Path(), "err", err)
	return s.message(c, status, "Sign-in unavailable", msg, true)
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// formatWait renders a block's remaining time, rounded up.
func formatWait(d time.Duration) string {
	secs := int((d + time.Second - 1) / time.Second)
	if secs < 120 {
		return strconv.Itoa(secs) + " seconds"
	}
	return strconv.Itoa((secs+59)/60) + " minutes"
}

// setRetryAfter sets Retry-After to wait in whole seconds, rounded up.
func setRetryAfter(c echo.Context, wait time.Duration) {
	c.Response().Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
}

func (s *Service) setCookie(c echo.Context, name, value string, maxAge int, sameSite http.SameSite) {
	c.SetCookie(&http.Cookie{Name: name, Value: value, Path: cookiePath, MaxAge: maxAge, HttpOnly: true,
		Secure: s.secureCookies(c.Request()), SameSite: sameSite})
}

// formCSRF returns the code form's CSRF token: the browser's CSRF cookie,
// set when missing (double submit: a cross-site form can neither read nor
// send it).
func (s *Service) formCSRF(c echo.Context) (string, error) {
	if ck, err := c.Cookie(csrfCookie); err == nil && len(ck.Value) == 43 {
		return ck.Value, nil
	}
	tok, err := randomString(32)
	if err != nil {
		return "", err
	}
	s.setCookie(c, csrfCookie, tok, 0, http.SameSiteStrictMode)
	return tok, nil
}

// checkFormCSRF reports whether the posted csrf field matches the CSRF
// cookie.
func checkFormCSRF(c echo.Context) bool {
	ck, err := c.Cookie(csrfCookie)
	return err == nil && ck.Value != "" && equal(c.FormValue("csrf"), ck.Value)
}

// sessionCSRF is the CSRF token of a signed-in session's forms, derived
// from the session's cookie secret, which scripts and other sites cannot
// read.
func sessionCSRF(secret string) string { return hash("csrf:" + secret) }

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// session returns the browser's unexpired session and its cookie secret;
// nil without one.
func (s *Service) session(c echo.Context) (*store.SSOSession, string, error) {
	ck, err := c.Cookie(sessionCookie)
	if err != nil || len(ck.Value) != 43 {
		return nil, "", nil
	}
	sess, err := s.st.GetSSOSessionByHash(c.Request().Context(), hash(ck.Value))
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if !s.clock().Before(sess.ExpiresAt) {
		return nil, "", nil
	}
	return sess, ck.Value, nil
}

// signedIn returns the browser's session with an identity, nil without
// one.
func (s *Service) signedIn(c echo.Context) (*store.SSOSession, string, error) {
	sess, secret, err := s.session(c)
	if sess == nil || sess.Subject == "" {
		return nil, "", err
	}
	return sess, secret, nil
}

// startLogin opens a browser session for pendingID ("" to list devices)
// that returns to returnTo (store.SSOSession.ReturnTo) and sends the
// browser to the provider, unless the client's address has spent its
// starts.
func (s *Service) startLogin(c echo.Context, pendingID, returnTo string) error {
	ctx := c.Request().Context()
	wait, err := s.startWait(ctx, c.RealIP())
	if err != nil {
		return s.failed(c, err)
	}
	if wait > 0 {
		return s.tooMany(c, wait, "Too many sign-ins were started from your network.")
	}
	idp, err := s.provider(ctx)
	if err != nil {
		return s.failed(c, err)
	}
	var vals [4]string
	for i := range vals {
		if vals[i], err = randomString(32); err != nil {
			return s.failed(c, err)
		}
	}
	secret, state, nonce := vals[0], vals[1], vals[2]
	verifier := vals[3] + vals[0][:11] // 54 characters: RFC 7636 asks for 43 to 128
	now := s.clock()
	sess := &store.SSOSession{ID: newID(), SecretHash: hash(secret), State: state, Nonce: nonce, Verifier: verifier,
		PendingID: pendingID, ReturnTo: returnTo, CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionTTL)}
	if err := s.st.CreateSSOSession(ctx, sess); err != nil {
		return s.failed(c, err)
	}
	s.setCookie(c, sessionCookie, secret, int(s.cfg.SessionTTL.Seconds()), http.SameSiteLaxMode)
	if returnTo == store.SSOReturnConsole {
		return s.continueTo(c, idp.loginURL(state, nonce, verifier))
	}
	return c.Redirect(http.StatusSeeOther, idp.loginURL(state, nonce, verifier))
}

// limitForm bounds a page's form body.
func limitForm(c echo.Context) {
	r := c.Request()
	r.Body = http.MaxBytesReader(c.Response(), r.Body, maxBody)
}

// EnterCode serves GET /auth/device: the form that asks for the user code,
// prefilled from ?user_code=.
func (s *Service) EnterCode(c echo.Context) error {
	tok, err := s.formCSRF(c)
	if err != nil {
		return s.failed(c, err)
	}
	code := c.QueryParam("user_code")
	if len(code) > 32 {
		code = ""
	}
	return s.render(c, http.StatusOK, "enter", pageData{Title: "Connect a device", CSRF: tok, UserCode: code})
}

// SubmitCode serves POST /auth/device: it checks the user code (wrong codes
// count against the client's address) and sends the browser to the
// provider to sign in.
func (s *Service) SubmitCode(c echo.Context) error {
	limitForm(c)
	ctx := c.Request().Context()
	if !checkFormCSRF(c) {
		return s.message(c, http.StatusForbidden, "Form expired",
			"This form could not be verified (missing or stale security token). Open the page again and retry.", true)
	}
	ip := c.RealIP()
	wait, err := s.blocked(ctx, ip)
	if err != nil {
		return s.failed(c, err)
	}
	if wait > 0 {
		return s.tooMany(c, wait, tooManyCodes)
	}
	code := normalizeUserCode(c.FormValue("user_code"))
	var pa *store.PendingAuthorization
	if code != "" {
		pa, err = s.st.GetPendingAuthorizationByUserCode(ctx, hash(code))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return s.failed(c, err)
		}
	}
	if pa == nil {
		return s.wrongUserCode(c, ip)
	}
	if !s.clock().Before(pa.ExpiresAt) || pa.Status == store.PendingStatusExpired {
		return s.message(c, http.StatusGone, "Code expired",
			"This code has expired. Start the login on your device again to get a new code.", true)
	}
	if pa.Status != store.PendingStatusPending {
		return s.message(c, http.StatusConflict, "Code already used",
			"This code was already approved or denied. Start the login on your device again if you need a new token.", true)
	}
	return s.startLogin(c, pa.ID, "")
}

// wrongUserCode counts a wrong code and answers the form again, or the
// block it earned.
func (s *Service) wrongUserCode(c echo.Context, ip string) error {
	r := c.Request()
	wait, left, err := s.wrongCode(r.Context(), ip)
	if err != nil {
		return s.failed(c, err)
	}
	if wait > 0 {
		ev := s.auditEvent(r, c.Response().Header().Get(echo.HeaderXRequestID), ip, "client", "device.user_code", store.OutcomeDenied)
		ev.Reason = "too many wrong user codes"
		ev.Metadata = map[string]any{"blocked_seconds": int(wait.Seconds())}
		s.audit.Audit(ev)
		return s.tooMany(c, wait, tooManyCodes)
	}
	tok, err := s.formCSRF(c)
	if err != nil {
		return s.failed(c, err)
	}
	return s.render(c, http.StatusBadRequest, "enter", pageData{Title: "Connect a device", CSRF: tok,
		Problem: fmt.Sprintf("That code is not valid. Check it on your device and try again (%d more before a pause).", left)})
}

const tooManyCodes = "Too many wrong codes were entered from your network."

// tooMany renders the 429 page of an address that must wait: msg says
// why, the page and Retry-After how long.
func (s *Service) tooMany(c echo.Context, wait time.Duration, msg string) error {
	setRetryAfter(c, wait)
	return s.render(c, http.StatusTooManyRequests, "message", pageData{Title: "Too many attempts", Problem: "1",
		Message: msg, Wait: formatWait(wait)})
}

// Callback serves GET /auth/callback, where the provider sends the browser
// back: it checks the state against the browser's session, redeems the
// code with the PKCE verifier, verifies the ID token and the nonce, and
// records the person in the session (once).
func (s *Service) Callback(c echo.Context) error {
	ctx := c.Request().Context()
	sess, _, err := s.session(c)
	if err != nil {
		return s.failed(c, err)
	}
	if sess == nil {
		return s.refuse(c, http.StatusBadRequest, errNoSession)
	}
	if sess.State == "" {
		return s.refuse(c, http.StatusBadRequest, errUsedSession)
	}
	if !equal(c.QueryParam("state"), sess.State) {
		return s.refuse(c, http.StatusBadRequest, errBadState)
	}
	if c.QueryParam("error") != "" {
		return s.refuse(c, http.StatusForbidden, errProviderNo)
	}
	idp, err := s.provider(ctx)
	if err != nil {
		return s.failed(c, err)
	}
	who, err := s.exchange(ctx, idp, c.QueryParam("code"), sess.Verifier, sess.Nonce)
	if err != nil {
		s.log.InfoContext(ctx, "sign-in refused", "request_id", c.Response().Header().Get(echo.HeaderXRequestID), "err", err)
		if derr := s.st.DeleteSSOSession(ctx, sess.ID); derr != nil {
			return s.failed(c, derr)
		}
		return s.refuse(c, http.StatusForbidden, err)
	}
	err = s.st.CompleteSSOSession(ctx, sess.ID, who.Provider, who.Subject, who.Email)
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		return s.refuse(c, http.StatusBadRequest, errUsedSession)
	case err != nil:
		return s.failed(c, err)
	}
	if sess.ReturnTo == store.SSOReturnConsole {
		return s.finishConsole(c, sess, who)
	}
	if sess.PendingID != "" {
		return c.Redirect(http.StatusSeeOther, "/auth/device/approve")
	}
	return c.Redirect(http.StatusSeeOther, "/auth/devices")
}

// refuse renders a refused sign-in; the known reasons are shown, others
// as an unverifiable answer.
func (s *Service) refuse(c echo.Context, status int, err error) error {
	msg := errBadToken.Error()
	for _, known := range []error{errNoSession, errUsedSession, errBadState, errProviderNo, errUnverified, errDomain, errNoConsole} {
		if errors.Is(err, known) {
			msg = known.Error()
			break
		}
	}
	return s.message(c, status, "Sign-in refused", msg+".", true)
}

// pendingOf returns the signed-in session and the authorization it is
// for, or renders why there is none (handled is then true).
func (s *Service) pendingOf(c echo.Context) (sess *store.SSOSession, secret string, pa *store.PendingAuthorization, handled bool, err error) {
	sess, secret, err = s.signedIn(c)
	if err != nil || sess == nil || sess.PendingID == "" {
		if err == nil {
			err = s.refuse(c, http.StatusBadRequest, errNoSession)
		}
		return nil, "", nil, true, err
	}
	pa, err = s.st.GetPendingAuthorization(c.Request().Context(), sess.PendingID)
	if errors.Is(err, store.ErrNotFound) || err == nil && (!s.clock().Before(pa.ExpiresAt) || pa.Status == store.PendingStatusExpired) {
		return nil, "", nil, true, s.message(c, http.StatusGone, "Code expired",
			"This device login has expired or was already completed. Start the login on your device again.", true)
	}
	if err != nil {
		return nil, "", nil, true, s.failed(c, err)
	}
	return sess, secret, pa, false, nil
}

// ApprovePage serves GET /auth/device/approve: what the signed-in person
// is asked to approve.
func (s *Service) ApprovePage(c echo.Context) error {
	sess, secret, pa, handled, err := s.pendingOf(c)
	if handled {
		return err
	}
	if pa.Status != store.PendingStatusPending {
		return s.decided(c, pa.Status)
	}
	return s.render(c, http.StatusOK, "approve", pageData{Title: "Approve this device?", CSRF: sessionCSRF(secret),
		Email: sess.Email, Label: pa.Label, ClientIP: pa.ClientIP, Requested: formatTime(pa.CreatedAt)})
}

func (s *Service) decided(c echo.Context, status string) error {
	if status == store.PendingStatusApproved {
		return s.message(c, http.StatusOK, "Device approved", "The device is approved. You can close this page and return to it.", false)
	}
	return s.message(c, http.StatusOK, "Device denied", "The device was denied; it gets no token. You can close this page.", false)
}

// Decide serves POST /auth/device/approve: the signed-in person's Approve
// or Deny.
func (s *Service) Decide(c echo.Context) error {
	limitForm(c)
	r := c.Request()
	sess, secret, pa, handled, err := s.pendingOf(c)
	if handled {
		return err
	}
	if !equal(c.FormValue("csrf"), sessionCSRF(secret)) {
		return s.message(c, http.StatusForbidden, "Form expired",
			"This form could not be verified (missing or stale security token). Open the page again and retry.", true)
	}
	status, action := store.PendingStatusApproved, "device.approve"
	switch c.FormValue("decision") {
	case "approve":
	case "deny":
		status, action = store.PendingStatusDenied, "device.deny"
	default:
		return s.message(c, http.StatusBadRequest, "Choose Approve or Deny", "Choose Approve or Deny.", true)
	}
	err = s.st.DecidePendingAuthorization(r.Context(), pa.ID, status, sess.Provider, sess.Subject, sess.Email, s.clock())
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		return s.message(c, http.StatusConflict, "Already decided",
			"This device login was already approved, denied or has expired.", true)
	case err != nil:
		return s.failed(c, err)
	}
	ev := s.auditEvent(r, c.Response().Header().Get(echo.HeaderXRequestID), c.RealIP(), sess.Email, action, store.OutcomeSuccess)
	ev.Metadata = map[string]any{"user_id": sess.Provider + "#" + sess.Subject, "label": pa.Label, "device_ip": pa.ClientIP}
	s.audit.Audit(ev)
	return s.decided(c, status)
}

// maxDevices bounds the devices one page lists.
const maxDevices = 200

// Devices serves GET /auth/devices: the signed-in person's devices, with a
// Revoke button each; without a session, a button to sign in (a GET opens
// no sign-in by itself, so links and prefetches leave no state behind).
func (s *Service) Devices(c echo.Context) error {
	sess, secret, err := s.signedIn(c)
	if err != nil {
		return s.failed(c, err)
	}
	if sess == nil {
		tok, err := s.formCSRF(c)
		if err != nil {
			return s.failed(c, err)
		}
		return s.render(c, http.StatusOK, "signin", pageData{Title: "Your devices", CSRF: tok})
	}
	list, _, err := s.st.ListAgentTokens(c.Request().Context(), store.AgentTokenFilter{Provider: sess.Provider, Subject: sess.Subject,
		Page: store.Page{Page: 1, PageSize: maxDevices}})
	if err != nil {
		return s.failed(c, err)
	}
	now := s.clock()
	d := pageData{Title: "Your devices", Email: sess.Email, CSRF: sessionCSRF(secret)}
	for _, a := range list {
		row := deviceRow{ID: a.ID, Label: a.Label, Prefix: a.Prefix, Created: formatTime(a.CreatedAt),
			Expires: formatTime(a.AuthExpiresAt), Status: "active", Active: a.IsActive && now.Before(a.AuthExpiresAt)}
		switch {
		case !a.IsActive:
			row.Status = "revoked"
		case !row.Active:
			row.Status = "expired"
		}
		d.Devices = append(d.Devices, row)
	}
	return s.render(c, http.StatusOK, "devices", d)
}

// SignIn serves POST /auth/devices/signin: it sends the browser to the
// provider, and back to /auth/devices.
func (s *Service) SignIn(c echo.Context) error {
	limitForm(c)
	if !checkFormCSRF(c) {
		return s.message(c, http.StatusForbidden, "Form expired",
			"This form could not be verified (missing or stale security token). Open the page again and retry.", true)
	}
	return s.startLogin(c, "", "")
}

// RevokeDevice serves POST /auth/devices/{id}/revoke: the signed-in person
// revokes one of their own devices' tokens, on every replica.
func (s *Service) RevokeDevice(c echo.Context) error {
	limitForm(c)
	r := c.Request()
	sess, secret, err := s.signedIn(c)
	if err != nil {
		return s.failed(c, err)
	}
	if sess == nil {
		return s.refuse(c, http.StatusBadRequest, errNoSession)
	}
	if !equal(c.FormValue("csrf"), sessionCSRF(secret)) {
		return s.message(c, http.StatusForbidden, "Form expired",
			"This form could not be verified (missing or stale security token). Open the page again and retry.", true)
	}
	id := c.Param("id")
	a, err := s.st.GetAgentToken(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && (a.Provider != sess.Provider || a.Subject != sess.Subject) {
		return s.message(c, http.StatusNotFound, "No such device", "You have no device with that token.", true)
	}
	if err != nil {
		return s.failed(c, err)
	}
	if err := s.revoke(r.Context(), id); err != nil {
		return s.failed(c, err)
	}
	ev := s.auditEvent(r, c.Response().Header().Get(echo.HeaderXRequestID), c.RealIP(), sess.Email, "agent_token.revoke", store.OutcomeSuccess)
	ev.Metadata = map[string]any{"agent_token_id": id, "user_id": a.UserID(), "by": "owner"}
	s.audit.Audit(ev)
	return c.Redirect(http.StatusSeeOther, "/auth/devices")
}

// revoke deactivates an agent token and drops it from every replica's
// cache.
func (s *Service) revoke(ctx context.Context, id string) error {
	if err := s.st.RevokeAgentToken(ctx, id); err != nil {
		return err
	}
	s.inval.InvalidateToken(id)
	return nil
}
