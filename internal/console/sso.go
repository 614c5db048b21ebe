package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// admin reports whether email may sign in by SSO: it, or "@" and its
// domain, is in Admins.
func (cn *Console) admin(email string) bool {
	email = strings.ToLower(email)
	at := strings.LastIndexByte(email, '@')
	if at <= 0 {
		return false
	}
	return cn.admins[email] || cn.admins[email[at:]]
}

// signInSSO serves the sign-in page's "Sign in with SSO": after the same
// double-submit CSRF check as the token form, it starts a sign-in at the
// identity provider, which comes back through FinishSSO.
func (cn *Console) signInSSO(c echo.Context) error {
	if cn.o.SSO == nil {
		return &pageError{status: http.StatusNotFound, msg: "Sign-in by SSO is not set up here (CONSOLE_ADMINS)."}
	}
	ck, err := c.Cookie(signInCookie)
	if err != nil || !equalSecret(formValue(c, csrfField), ck.Value) {
		ev := cn.auditEvent(c, "console.signin")
		ev.Outcome, ev.Reason = store.OutcomeDenied, "missing or wrong CSRF token"
		ev.Metadata = map[string]any{"method": store.SessionMethodSSO}
		cn.o.Manager.Audit(ev)
		return cn.signInFormError(c, http.StatusForbidden, "", "The sign-in form expired. Try again.")
	}
	cn.setCookie(c, signInCookie, "", "/console/signin", time.Time{})
	return cn.o.SSO.StartConsoleSignIn(c)
}

// FinishSSO completes a sign-in StartConsoleSignIn began, for the person
// the identity provider verified: a console admin gets a session and goes
// on to the console, anyone else gets a 403 page; both are audited. The
// SSO callback (/auth/callback) calls it, outside the /console routes.
func (cn *Console) FinishSSO(c echo.Context, email string) error {
	return cn.secureHeaders(cn.renderErrors(func(c echo.Context) error {
		return cn.finishSSO(c, strings.ToLower(email))
	}))(c)
}

type signedInPage struct {
	Email string
}

func (cn *Console) finishSSO(c echo.Context, email string) error {
	ev := cn.auditEvent(c, "console.signin")
	ev.Actor = auth.Bound(email, 256)
	ev.Metadata = map[string]any{"method": store.SessionMethodSSO}
	if !cn.admin(email) {
		ev.Outcome, ev.Reason = store.OutcomeDenied, "not in CONSOLE_ADMINS"
		cn.o.Manager.Audit(ev)
		return &pageError{status: http.StatusForbidden,
			msg: email + " may not use this console: it is not in CONSOLE_ADMINS. Ask an operator to add it, or sign in with the management token."}
	}
	if err := cn.openSession(c, store.SessionMethodSSO, email); err != nil {
		return err
	}
	ev.Outcome = store.OutcomeSuccess
	cn.o.Manager.Audit(ev)
	// The browser came here from the provider's site, and a browser sends
	// no SameSite=Strict cookie anywhere along a redirect chain another
	// site started: a redirect would reach /console without the new
	// session. A page of ours that moves on starts a navigation of its own.
	c.Response().Header().Set("Refresh", "0; url=/console/usage")
	return cn.render(c, http.StatusOK, "signed_in", signedInPage{Email: email})
}
