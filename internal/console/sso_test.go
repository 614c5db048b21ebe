package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/console"
	"github.com/llmproxy/llm-proxy/internal/sso"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/idp"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

const (
	ssoClientID     = "llm-proxy-console"
	ssoClientSecret = "console-sso-client-secret"
)

// noInvalidation stands in for the invalidation bus: the console's SSO
// sign-ins revoke no agent tokens.
type noInvalidation struct{}

func (noInvalidation) InvalidateToken(string) {}

// ssoServer starts a console with sign-in by SSO for admins on e's store:
// the console under /console and the SSO callback at /auth/callback, with
// the test provider p (started when nil) as the identity provider.
func (e *env) ssoServer(t *testing.T, p *idp.Provider, token string, admins ...string) (*httptest.Server, *idp.Provider) {
	t.Helper()
	if p == nil {
		p = idp.Start(t, ssoClientID, ssoClientSecret)
	}
	srv := httptest.NewUnstartedServer(nil)
	svc := sso.New(sso.Config{Issuer: p.URL, ClientID: ssoClientID, ClientSecret: ssoClientSecret,
		RedirectURL: "http://" + srv.Listener.Addr().String() + "/auth/callback", Project: "agents", Now: e.clock.Now,
	}, e.st, noInvalidation{}, e.audit)
	cn, err := console.New(console.Options{
		Manager: e.manager, Sessions: e.st, Failures: auth.NewFailureLimiter(e.st, e.audit, auth.FailureOptions{Limit: 5}),
		ManagementToken: token, SessionIdle: 30 * time.Minute, SessionMax: 12 * time.Hour, Now: e.clock.Now,
		SSO: svc, Admins: admins,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetConsole(cn)
	ec := echo.New()
	cn.Routes(ec.Group("/console"))
	ec.GET("/auth/callback", svc.Callback)
	srv.Config.Handler = ec
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, p
}

// fetch GETs an absolute URL without following redirects.
func (b *browser) fetch(u string) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// refreshTarget returns the URL a page's Refresh header sends the browser
// on to.
func refreshTarget(t *testing.T, resp *http.Response) string {
	t.Helper()
	target, ok := strings.CutPrefix(resp.Header.Get("Refresh"), "0; url=")
	if !ok {
		t.Fatalf("status %d without a Refresh header to follow (%q)", resp.StatusCode, resp.Header.Get("Refresh"))
	}
	return target
}

// startSSO submits the sign-in page's SSO form (with extra fields) and
// returns the provider's authorization URL the answer sends the browser
// on to.
func (b *browser) startSSO(extra url.Values) string {
	b.t.Helper()
	_, page := b.get("/console/signin")
	if !strings.Contains(page, `action="/console/signin/sso"`) {
		b.t.Fatalf("the sign-in page offers no SSO:\n%s", page)
	}
	form := url.Values{"csrf": {csrfOf(b.t, page)}}
	for k, v := range extra {
		form[k] = v
	}
	resp, body := b.post("/console/signin/sso", form)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("start SSO: status %d\n%s", resp.StatusCode, body)
	}
	return refreshTarget(b.t, resp)
}

// callbackURL signs in at the provider (authorize) and returns where it
// sends the browser back to, with code and state.
func (b *browser) callbackURL(authorize string) string {
	b.t.Helper()
	resp, body := b.fetch(authorize)
	if resp.StatusCode != http.StatusFound {
		b.t.Fatalf("provider: status %d\n%s", resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

// ssoSignIn runs a whole sign-in by SSO for whoever the provider signs in
// and returns the callback's answer.
func (b *browser) ssoSignIn() (*http.Response, string) {
	b.t.Helper()
	return b.fetch(b.callbackURL(b.startSSO(nil)))
}

// sessions counts the console sessions in st.
func sessions(t *testing.T, st store.Store) int64 {
	t.Helper()
	// Every session "expired" before the far future: deleting them counts them.
	far := time.Now().Add(100 * 365 * 24 * time.Hour)
	n, err := st.DeleteConsoleSessionsBefore(t.Context(), far, far, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSSOSignIn(t *testing.T) {
	t.Parallel()
	for _, db := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"sqlite", func(t *testing.T) store.Store { return teststore.SQLite(t) }},
		{"postgres", func(t *testing.T) store.Store { return teststore.Postgres(t) }},
	} {
		t.Run(db.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, db.open(t))
			if _, page := newBrowser(t, e.server(t, mgmtToken).URL).get("/console/signin"); strings.Contains(page, "Sign in with SSO") {
				t.Error("a console without CONSOLE_ADMINS offers SSO")
			}
			srv, p := e.ssoServer(t, nil, mgmtToken, "grace@example.com", "ADA@example.com")
			p.SetUser(idp.User{Subject: "user-1", Email: "Ada@Example.com", EmailVerified: true})
			b := newBrowser(t, srv.URL)

			resp, body := b.ssoSignIn()
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, "ada@example.com") {
				t.Fatalf("callback: status %d\n%s", resp.StatusCode, body)
			}
			if got := refreshTarget(t, resp); got != "/console/usage" {
				t.Errorf("after the callback the browser goes to %q, want /console/usage", got)
			}
			status, page := b.get("/console/usage")
			if status != http.StatusOK || !strings.Contains(page, "Signed in as ada@example.com") || !strings.Contains(page, "Sign out") {
				t.Fatalf("usage page after SSO: status %d\n%s", status, page)
			}
			ev := e.audit.find("console.signin", store.OutcomeSuccess)
			if ev == nil || ev.Actor != "ada@example.com" || ev.Metadata["method"] != store.SessionMethodSSO {
				t.Fatalf("sign-in audit event = %+v, want actor ada@example.com, method sso", ev)
			}
			// The session's actions are the person's.
			if resp, _ := b.post("/console/signout", url.Values{"csrf": {csrfOf(t, page)}}); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign out: status %d", resp.StatusCode)
			}
			if ev := e.audit.find("console.signout", store.OutcomeSuccess); ev == nil || ev.Actor != "ada@example.com" {
				t.Fatalf("sign-out audit event = %+v, want actor ada@example.com", ev)
			}
		})
	}
}

func TestSSOSignInRefusesNonAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	srv, p := e.ssoServer(t, nil, mgmtToken, "ada@example.com", "@corp.example")
	p.SetUser(idp.User{Subject: "user-2", Email: "mallory@example.com", EmailVerified: true})
	b := newBrowser(t, srv.URL)

	resp, body := b.ssoSignIn()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "mallory@example.com may not use this console") {
		t.Fatalf("non-admin callback: status %d, want 403\n%s", resp.StatusCode, body)
	}
	if resp.Header.Get("Refresh") != "" || sessionCookie(t, resp.Request.URL, b) != "" || sessions(t, e.st) != 0 {
		t.Fatal("a non-admin got a session")
	}
	if _, page := b.get("/console/projects"); strings.Contains(page, "Sign out") {
		t.Fatal("a non-admin is signed in")
	}
	ev := e.audit.find("console.signin", store.OutcomeDenied)
	if ev == nil || ev.Actor != "mallory@example.com" || ev.Metadata["method"] != store.SessionMethodSSO {
		t.Fatalf("denied sign-in audit event = %+v", ev)
	}

	// A domain entry admits the whole domain, and only it.
	p.SetUser(idp.User{Subject: "user-3", Email: "bob@corp.example", EmailVerified: true})
	if resp, body := newBrowser(t, srv.URL).ssoSignIn(); resp.StatusCode != http.StatusOK {
		t.Fatalf("@corp.example admin: status %d\n%s", resp.StatusCode, body)
	}
	p.SetUser(idp.User{Subject: "user-4", Email: "bob@evilcorp.example", EmailVerified: true})
	if resp, body := newBrowser(t, srv.URL).ssoSignIn(); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob@evilcorp.example: status %d, want 403\n%s", resp.StatusCode, body)
	}
}

// TestSSOSessionFollowsConsoleAdmins: an SSO session lasts while its person
// is in CONSOLE_ADMINS, checked on every request, and does not depend on
// the management token.
func TestSSOSessionFollowsConsoleAdminsAndTheToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	srv, p := e.ssoServer(t, nil, mgmtToken, "@example.com")
	b := newBrowser(t, srv.URL)
	if resp, body := b.ssoSignIn(); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in: status %d\n%s", resp.StatusCode, body)
	}
	// Replicas on the same database; the cookie jar sends the cookie to
	// every port of the host.
	removed, _ := e.ssoServer(t, p, mgmtToken, "grace@example.com")
	status, page := newBrowserWithJar(b, removed.URL).get("/console/projects")
	if status != http.StatusOK || !strings.Contains(page, "not in CONSOLE_ADMINS") || strings.Contains(page, "Sign out") {
		t.Fatalf("after removal from CONSOLE_ADMINS: status %d, want the sign-in page saying why\n%s", status, page)
	}
	// The session is gone, also where the person is still an admin.
	if _, page := b.get("/console/projects"); strings.Contains(page, "Sign out") {
		t.Fatal("the session of a removed admin still works elsewhere")
	}
	if n := sessions(t, e.st); n != 0 {
		t.Fatalf("%d sessions left, want 0", n)
	}

	// Rotating the management token ends SSO sessions as it ends token
	// sessions (SPEC §6.8).
	if resp, body := b.ssoSignIn(); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in again: status %d\n%s", resp.StatusCode, body)
	}
	rotated, _ := e.ssoServer(t, p, mgmtToken+"-rotated", "@example.com")
	if _, page := newBrowserWithJar(b, rotated.URL).get("/console/projects"); strings.Contains(page, "Sign out") ||
		!strings.Contains(page, "management token has changed") {
		t.Fatalf("an SSO session survived a new management token:\n%s", page)
	}
}

// newBrowserWithJar is a browser for base sharing b's cookies.
func newBrowserWithJar(b *browser, base string) *browser {
	return &browser{t: b.t, c: b.c, base: base}
}

func TestSSOStartNeedsCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	srv, p := e.ssoServer(t, nil, mgmtToken, "ada@example.com")

	b := newBrowser(t, srv.URL)
	_, page := b.get("/console/signin")
	token := csrfOf(t, page)
	for name, form := range map[string]url.Values{
		"no token":    {},
		"wrong token": {"csrf": {token + "x"}},
	} {
		resp, body := b.post("/console/signin/sso", form)
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Refresh") != "" || !strings.Contains(body, "sign-in form expired") {
			t.Errorf("%s: status %d, want 403 without going on\n%s", name, resp.StatusCode, body)
		}
	}
	// A token from the page without the browser's cookie (a cross-site form).
	resp, _ := newBrowser(t, srv.URL).post("/console/signin/sso", url.Values{"csrf": {token}})
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Refresh") != "" {
		t.Errorf("without the cookie: status %d, want 403", resp.StatusCode)
	}
	if ev := e.audit.find("console.signin", store.OutcomeDenied); ev == nil || ev.Reason != "missing or wrong CSRF token" {
		t.Errorf("refused start audit event = %+v", ev)
	}
	if p.Logins() != 0 || sessions(t, e.st) != 0 {
		t.Fatal("a refused start reached the provider or opened a session")
	}
}

func TestSSOStateCannotBeReplayed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	srv, _ := e.ssoServer(t, nil, mgmtToken, "ada@example.com")
	b := newBrowser(t, srv.URL)
	callback := b.callbackURL(b.startSSO(nil))
	cu, _ := url.Parse(callback)
	ssoCookies := b.c.Jar.Cookies(cu) // the sign-in's browser session, as an attacker might copy it
	if resp, body := b.fetch(callback); resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: status %d\n%s", resp.StatusCode, body)
	}

	// The same browser, the copied cookie elsewhere, or no cookie at all:
	// the sign-in was used up.
	thief := newBrowser(t, srv.URL)
	thief.c.Jar.SetCookies(cu, ssoCookies)
	for name, br := range map[string]*browser{"same browser": b, "copied cookie": thief, "no cookie": newBrowser(t, srv.URL)} {
		resp, body := br.fetch(callback)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "start again") {
			t.Errorf("%s: replayed callback: status %d, want 400\n%s", name, resp.StatusCode, body)
		}
	}
	if _, page := thief.get("/console/projects"); strings.Contains(page, "Sign out") {
		t.Fatal("a replayed callback signed in")
	}
	if n := sessions(t, e.st); n != 1 {
		t.Fatalf("%d sessions, want the one sign-in's", n)
	}
}

func TestSSOIgnoresReturnURLFromRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	srv, _ := e.ssoServer(t, nil, mgmtToken, "ada@example.com")
	b := newBrowser(t, srv.URL)
	evil := "https://evil.example/steal"
	authorize := b.startSSO(url.Values{"return_to": {evil}, "next": {evil}, "redirect_uri": {evil}})
	if strings.Contains(authorize, "evil.example") {
		t.Fatalf("the authorization request carries the attacker's URL: %s", authorize)
	}
	callback := b.callbackURL(authorize)
	if !strings.HasPrefix(callback, srv.URL+"/auth/callback?") {
		t.Fatalf("the provider returns to %s, want the configured callback", callback)
	}
	resp, body := b.fetch(callback + "&return_to=" + url.QueryEscape(evil) + "&next=" + url.QueryEscape(evil))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || strings.Contains(body, "evil.example") {
		t.Fatalf("callback: status %d, Location %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if got := refreshTarget(t, resp); got != "/console/usage" {
		t.Fatalf("after the callback the browser goes to %q, want /console/usage", got)
	}
}

func TestAdminsNeedSSO(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	_, err := console.New(console.Options{Manager: e.manager, Sessions: e.st, Failures: auth.NewFailureLimiter(e.st, e.audit, auth.FailureOptions{}),
		ManagementToken: mgmtToken, Admins: []string{"ada@example.com"}})
	if err == nil {
		t.Fatal("Admins without SSO: want an error")
	}
}
