package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/store"
)

const (
	// sessionCookie holds the session id; signInCookie the sign-in form's
	// CSRF token (double submit: there is no session yet).
	sessionCookie = "console_session"
	signInCookie  = "console_signin"
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
	// actorToken is the audit actor of a session opened with the
	// management token; an SSO session's is the person's email.
	actorToken = "console"
	// touchEvery is how stale last_seen_at may get before a request writes
	// it: idle expiry is this much coarse, and a page view is not a write.
	touchEvery = time.Minute
	// purgeLimit bounds the expired sessions one sign-in deletes.
	purgeLimit = 1000
	// maxTokenInput bounds the management token a form may carry.
	maxTokenInput = 4096
)

// session is the signed-in session of a request.
type session struct {
	idHash  string
	method  string
	subject string
	csrf    string
}

const sessionKey = "console.session"

func currentSession(c echo.Context) *session {
	s, _ := c.Get(sessionKey).(*session)
	return s
}

func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// tokenMAC binds a session id to the management token: stored with the
// session and recomputed on every request, so a new token fails the check.
// The token cannot be recovered from it without the session id, which only
// the browser has.
func tokenMAC(managementToken, id string) string {
	m := hmac.New(sha256.New, []byte(managementToken))
	m.Write([]byte("llm-proxy console session\x00" + id))
	return hex.EncodeToString(m.Sum(nil))
}

// csrfToken is the session's CSRF token: unpredictable without the session
// id, and the same on every replica.
func csrfToken(id string) string {
	m := hmac.New(sha256.New, []byte(id))
	m.Write([]byte("llm-proxy console csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func equalSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// secure reports whether the browser reached the proxy over TLS: directly,
// or through a trusted proxy saying so in X-Forwarded-Proto.
func (cn *Console) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	proto := r.Header.Get("X-Forwarded-Proto")
	if proto == "" || !cn.trustedPeer(r.RemoteAddr) {
		return false
	}
	first, _, _ := strings.Cut(proto, ",")
	return strings.EqualFold(strings.TrimSpace(first), "https")
}

func (cn *Console) trustedPeer(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range cn.o.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (cn *Console) setCookie(c echo.Context, name, value, path string, expires time.Time) {
	ck := &http.Cookie{Name: name, Value: value, Path: path, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: cn.secure(c.Request())}
	if value == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
	}
	c.SetCookie(ck)
}

// lookup returns the live session named by the request's cookie, or nil
// with the reason it is not live ("" when there was no cookie). Expired
// sessions, and sessions of another management token, are deleted.
func (cn *Console) lookup(c echo.Context) (*session, string, error) {
	ck, err := c.Cookie(sessionCookie)
	if err != nil || ck.Value == "" || len(ck.Value) > 128 {
		return nil, "", nil
	}
	ctx := c.Request().Context()
	idHash := hashID(ck.Value)
	s, err := cn.o.Sessions.GetConsoleSession(ctx, idHash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "Your session has ended. Sign in again.", nil
	}
	if err != nil {
		return nil, "", err
	}
	now := cn.o.Now().UTC()
	var reason string
	switch {
	case !now.Before(s.ExpiresAt) || !now.Before(s.CreatedAt.Add(cn.o.SessionMax)):
		reason = "Your session reached its maximum length. Sign in again."
	case now.Sub(s.LastSeenAt) >= cn.o.SessionIdle:
		reason = "Your session ended after a period of inactivity. Sign in again."
	case !hmac.Equal([]byte(s.TokenMAC), []byte(tokenMAC(cn.o.ManagementToken, ck.Value))):
		// Rotating the management token ends every session (SPEC §6.8),
		// those opened by SSO too.
		reason = "The management token has changed, which ends every console session. Sign in again."
	case s.Method == store.SessionMethodSSO:
		// An SSO session also lasts only while its person is in
		// CONSOLE_ADMINS.
		if !cn.admin(s.Subject) {
			reason = "Your account may no longer use the console (it is not in CONSOLE_ADMINS)."
		}
	case s.Method != store.SessionMethodToken:
		reason = "Sign in again."
	}
	if reason != "" {
		if err := cn.o.Sessions.DeleteConsoleSession(ctx, idHash); err != nil {
			return nil, "", err
		}
		return nil, reason, nil
	}
	if now.Sub(s.LastSeenAt) >= touchEvery {
		if err := cn.o.Sessions.TouchConsoleSession(ctx, idHash, now.Truncate(time.Microsecond)); err != nil {
			return nil, "", err
		}
	}
	return &session{idHash: idHash, method: s.Method, subject: s.Subject, csrf: csrfToken(ck.Value)}, "", nil
}

// requireSession lets signed-in requests through, with their session in
// the context; others go to the sign-in page (GET) or get 401. State-changing
// requests must carry the session's CSRF token (form field or header), or
// get 403 and an audit event.
func (cn *Console) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s, reason, err := cn.lookup(c)
		if err != nil {
			return err
		}
		if s == nil {
			cn.setCookie(c, sessionCookie, "", "/console", time.Time{})
			if c.Request().Method == http.MethodGet || c.Request().Method == http.MethodHead {
				return cn.signInForm(c, reason)
			}
			return &pageError{status: http.StatusUnauthorized, msg: "You are not signed in (or your session has ended). Sign in again."}
		}
		c.Set(sessionKey, s)
		if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
			got := c.Request().Header.Get(csrfHeader)
			if got == "" {
				got = formValue(c, csrfField)
			}
			if !equalSecret(got, s.csrf) {
				ev := cn.auditEvent(c, "console.csrf")
				ev.Outcome, ev.Reason = store.OutcomeDenied, "missing or wrong CSRF token"
				cn.o.Manager.Audit(ev)
				return &pageError{status: http.StatusForbidden, msg: "The form's security token is missing or out of date. Reload the page and try again."}
			}
		}
		return next(c)
	}
}

// formValue reads a form field, bounding the body the form may have.
func formValue(c echo.Context, name string) string {
	r := c.Request()
	if r.PostForm == nil {
		r.Body = http.MaxBytesReader(c.Response(), r.Body, maxFormBytes)
		_ = r.ParseForm()
	}
	return r.PostFormValue(name)
}

// maxFormBytes bounds console form bodies; they are small.
const maxFormBytes = 64 << 10

type signInPage struct {
	CSRF    string
	Message string
	Error   string
	SSO     bool // offer "Sign in with SSO"
}

func (cn *Console) signInPage(c echo.Context) error {
	s, reason, err := cn.lookup(c)
	if err != nil {
		return err
	}
	if s != nil {
		return c.Redirect(http.StatusSeeOther, "/console/usage")
	}
	msg := reason
	if c.QueryParam("signed_out") == "1" {
		msg = "You are signed out."
	}
	return cn.signInForm(c, msg)
}

// signInForm renders the sign-in page with a fresh double-submit CSRF
// token in a cookie scoped to the sign-in path.
func (cn *Console) signInForm(c echo.Context, msg string) error {
	return cn.signInFormError(c, http.StatusOK, msg, "")
}

func (cn *Console) signInFormError(c echo.Context, status int, msg, errMsg string) error {
	tok, err := newSecret()
	if err != nil {
		return err
	}
	cn.setCookie(c, signInCookie, tok, "/console/signin", cn.o.Now().Add(time.Hour))
	return cn.render(c, status, "signin", signInPage{CSRF: tok, Message: msg, Error: errMsg, SSO: cn.o.SSO != nil})
}

func (cn *Console) signIn(c echo.Context) error {
	r := c.Request()
	ck, err := c.Cookie(signInCookie)
	if err != nil || !equalSecret(formValue(c, csrfField), ck.Value) {
		ev := cn.auditEvent(c, "console.signin")
		ev.Outcome, ev.Reason = store.OutcomeDenied, "missing or wrong CSRF token"
		cn.o.Manager.Audit(ev)
		return cn.signInFormError(c, http.StatusForbidden, "", "The sign-in form expired. Try again.")
	}
	ip := c.RealIP()
	retryAfter, blocked := cn.o.Failures.Blocked(ip)
	presented := formValue(c, "token")
	want := sha256.Sum256([]byte(cn.o.ManagementToken))
	got := sha256.Sum256([]byte(presented))
	if len(presented) > maxTokenInput || subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
		cn.o.Failures.Fail(r.Context(), auth.Failure{IP: ip, Method: r.Method, Path: r.URL.Path, Reason: "invalid management token",
			RequestID: c.Response().Header().Get(echo.HeaderXRequestID), Actor: actorToken, Action: "console.signin"})
		if blocked {
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds()+0.5)))
			return cn.signInFormError(c, http.StatusTooManyRequests, "", "Too many failed sign-ins from your address. Wait a minute and try again.")
		}
		return cn.signInFormError(c, http.StatusUnauthorized, "", "That is not the management token.")
	}
	if err := cn.openSession(c, store.SessionMethodToken, actorToken); err != nil {
		return err
	}
	cn.setCookie(c, signInCookie, "", "/console/signin", time.Time{})
	ev := cn.auditEvent(c, "console.signin")
	ev.Outcome, ev.Metadata = store.OutcomeSuccess, map[string]any{"method": store.SessionMethodToken}
	cn.o.Manager.Audit(ev)
	return c.Redirect(http.StatusSeeOther, "/console/usage")
}

// openSession creates a session for subject, opened by method, and sets
// its cookie. Every session carries the MAC that ties it to the
// management token, so rotating the token ends it.
func (cn *Console) openSession(c echo.Context, method, subject string) error {
	ctx := c.Request().Context()
	id, err := newSecret()
	if err != nil {
		return err
	}
	now := cn.o.Now().UTC().Truncate(time.Microsecond)
	s := &store.ConsoleSession{IDHash: hashID(id), Method: method, Subject: subject,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(cn.o.SessionMax)}
	s.TokenMAC = tokenMAC(cn.o.ManagementToken, id)
	if _, err := cn.o.Sessions.DeleteConsoleSessionsBefore(ctx, now, now.Add(-cn.o.SessionIdle), purgeLimit); err != nil {
		return err
	}
	if err := cn.o.Sessions.CreateConsoleSession(ctx, s); err != nil {
		return err
	}
	cn.setCookie(c, sessionCookie, id, "/console", s.ExpiresAt)
	return nil
}

func (cn *Console) signOut(c echo.Context) error {
	s := currentSession(c)
	if err := cn.o.Sessions.DeleteConsoleSession(c.Request().Context(), s.idHash); err != nil {
		return err
	}
	cn.setCookie(c, sessionCookie, "", "/console", time.Time{})
	ev := cn.auditEvent(c, "console.signout")
	ev.Outcome = store.OutcomeSuccess
	cn.o.Manager.Audit(ev)
	return c.Redirect(http.StatusSeeOther, "/console/signin?signed_out=1")
}

// auditEvent starts the audit event of a console request; the caller sets
// its outcome.
func (cn *Console) auditEvent(c echo.Context, action string) store.AuditEvent {
	r := c.Request()
	actor := actorToken
	if s := currentSession(c); s != nil {
		actor = s.subject
	}
	return store.AuditEvent{
		Actor:     actor,
		Action:    action,
		RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		ClientIP:  c.RealIP(),
		Method:    r.Method,
		Path:      auth.Bound(r.URL.Path, auth.MaxAuditPath),
	}
}
