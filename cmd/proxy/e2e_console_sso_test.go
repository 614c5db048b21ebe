package main

import (
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/llmproxy/llm-proxy/internal/testkit/idp"
)

// TestConsoleSSOInBrowser signs in to the console by SSO in headless
// Chromium, which holds the two rules the sign-in's hops are built around:
// it applies the console's form-action 'self' to a form's redirects too,
// and sends no SameSite=Strict cookie along a redirect chain another site
// started. The provider runs on 127.0.0.1 and the proxy is reached as
// localhost, so they are different sites, as in production, and the
// provider shows a page of its own before sending the browser back.
func TestConsoleSSOInBrowser(t *testing.T) {
	const mgmt, secret = "mgmt-token-console-sso-0123456789", "sso-client-secret-console"
	ctx := browserContext(t)
	shots := artifactDir(t)
	provider := idp.Start(t, "llm-proxy", secret)
	provider.ShowPage(true)
	var target atomic.Pointer[url.URL]
	front := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target.Load())
		r.Out.Host = r.In.Host
	}})
	t.Cleanup(front.Close)
	public := strings.Replace(front.URL, "127.0.0.1", "localhost", 1)
	p := startProxy(t, t.TempDir(), "MANAGEMENT_TOKEN="+mgmt, "SSO_ISSUER="+provider.URL, "SSO_CLIENT_ID=llm-proxy",
		"SSO_CLIENT_SECRET="+secret, "SSO_PROJECT=agents", "PUBLIC_URL="+public,
		"CONSOLE_ENABLED=true", "CONSOLE_ADMINS=ada@example.com")
	u, err := url.Parse(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	target.Store(u)
	ssoButton := chromedp.CSS(`form[action="/console/signin/sso"] button`)

	do(t, ctx, "open the console", chromedp.Navigate(public+"/console/"), chromedp.WaitVisible(ssoButton))
	shoot(t, ctx, shots, "01-signin-sso")
	do(t, ctx, "sign in with SSO", chromedp.Click(ssoButton), chromedp.WaitVisible(chromedp.ID("continue")))
	do(t, ctx, "back from the provider", chromedp.Click(chromedp.ID("continue")), chromedp.WaitVisible(chromedp.CSS(`nav[aria-label="Console"]`)))
	if who := text(t, ctx, ".signout .who"); !strings.Contains(who, "ada@example.com") {
		t.Fatalf("the header says %q, want the person's email", who)
	}
	shoot(t, ctx, shots, "02-signed-in-sso")

	provider.SetUser(idp.User{Subject: "user-2", Email: "mallory@example.com", EmailVerified: true})
	do(t, ctx, "sign out", chromedp.Click(chromedp.CSS(`form[action="/console/signout"] button`)), chromedp.WaitVisible(ssoButton))
	do(t, ctx, "sign in with SSO as a non-admin", chromedp.Click(ssoButton), chromedp.WaitVisible(chromedp.ID("continue")))
	do(t, ctx, "back from the provider", chromedp.Click(chromedp.ID("continue")), chromedp.WaitVisible(chromedp.CSS(".alert.error")))
	if msg := text(t, ctx, ".alert.error"); !strings.Contains(msg, "mallory@example.com may not use this console") {
		t.Fatalf("non-admin page says %q", msg)
	}
	shoot(t, ctx, shots, "03-not-an-admin")
}
