package sso

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// ConsoleSignIn finishes the admin console's sign-ins by SSO (SPEC §6.8);
// *console.Console implements it.
type ConsoleSignIn interface {
	// FinishSSO is called by the callback with the email the provider
	// verified (and SSO_ALLOWED_DOMAINS allowed); it decides whether the
	// person may use the console and answers the browser.
	FinishSSO(c echo.Context, email string) error
}

// SetConsole hands the sign-ins StartConsoleSignIn starts to cs once the
// provider has verified the person. Call it before the Service serves
// requests; without it such a sign-in ends on a refusal page.
func (s *Service) SetConsole(cs ConsoleSignIn) { s.console = cs }

// StartConsoleSignIn serves the admin console's "Sign in with SSO" form,
// whose CSRF token the console has checked: it starts a sign-in whose
// callback goes to the console, whatever the request says. The console's
// pages allow forms to post only to the proxy (form-action 'self'), which
// browsers apply to a form's redirects too, so the browser is sent on to
// the provider by a page rather than a redirect.
func (s *Service) StartConsoleSignIn(c echo.Context) error {
	return s.startLogin(c, "", store.SSOReturnConsole)
}

// continueTo renders a page that sends the browser on to target (a
// Refresh, which is a navigation of its own, not the form's), with a link
// for browsers that do not follow it.
func (s *Service) continueTo(c echo.Context, target string) error {
	c.Response().Header().Set("Refresh", "0; url="+target)
	return s.render(c, http.StatusOK, "continue", pageData{Title: "Signing in", Link: target})
}

// finishConsole ends a console sign-in's browser session, which served
// only that sign-in, and hands the verified person to the console.
func (s *Service) finishConsole(c echo.Context, sess *store.SSOSession, who *identity) error {
	if err := s.st.DeleteSSOSession(c.Request().Context(), sess.ID); err != nil {
		return s.failed(c, err)
	}
	s.setCookie(c, sessionCookie, "", -1, http.SameSiteLaxMode)
	if s.console == nil {
		return s.refuse(c, http.StatusNotFound, errNoConsole)
	}
	return s.console.FinishSSO(c, who.Email)
}
