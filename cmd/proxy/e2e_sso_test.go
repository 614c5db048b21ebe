package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/testkit/idp"
	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

// TestDeviceLoginThroughRun wires SSO through the real start-up (the
// settings, the store, the auth cache, the routes): the device endpoints
// wait for SSO_PROJECT, then a browser signs in at a test provider and
// approves, the agent's poll gets a token, and the token proxies a chat
// completion; then the person signs in to the admin console by SSO
// (CONSOLE_ADMINS) through the same callback; the address has then spent
// its SSO_START_LIMIT of 4 starts (two device codes and two sign-ins) and
// the next device code is refused. The proxy sits behind a front server,
// as behind a load balancer, so PUBLIC_URL and the redirect URL are known
// before it starts.
func TestDeviceLoginThroughRun(t *testing.T) {
	const mgmt, secret = "mgmt-token-sso-e2e-0123456789", "sso-client-secret-e2e"
	provider := idp.Start(t, "llm-proxy", secret)
	up := httptest.NewServer(upstream.New(upstream.Options{Key: "sk-upstream-e2e"}))
	t.Cleanup(up.Close)
	var target atomic.Pointer[url.URL]
	front := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target.Load())
		r.Out.Host = r.In.Host
	}})
	t.Cleanup(front.Close)
	p := startProxy(t, t.TempDir(), "MANAGEMENT_TOKEN="+mgmt, "SSO_ISSUER="+provider.URL, "SSO_CLIENT_ID=llm-proxy",
		"SSO_CLIENT_SECRET="+secret, "SSO_PROJECT=agents", "PUBLIC_URL="+front.URL, "SSO_START_LIMIT=4", "LOG_LEVEL=debug",
		"CONSOLE_ENABLED=true", "CONSOLE_ADMINS=Ada@example.com")
	u, err := url.Parse(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	target.Store(u)

	post := func(path string, form url.Values) (int, string) {
		res, err := http.PostForm(front.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := post("/auth/device/code", nil); code != http.StatusServiceUnavailable || !strings.Contains(body, "SSO_PROJECT") {
		t.Fatalf("before the project exists: %d %s", code, body)
	}
	if code := call(t, "POST", p.addr+"/manage/projects", mgmt, map[string]any{"name": "agents", "base_url": up.URL,
		"api_key": "sk-upstream-e2e"}, nil); code != http.StatusCreated {
		t.Fatalf("create project: %d", code)
	}
	var codes struct {
		DeviceCode              string `json:"device_code"`
		VerificationURIComplete string `json:"verification_uri_complete"`
	}
	if code := call(t, "POST", front.URL+"/auth/device/code", "", map[string]string{"client_name": "e2e"}, &codes); code != http.StatusOK ||
		!strings.HasPrefix(codes.VerificationURIComplete, front.URL+"/auth/device?user_code=") {
		t.Fatalf("device code: %d %+v", code, codes)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	page := func(res *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", res.Request.URL, res.StatusCode, b)
		}
		return string(b)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	form := page(browser.Get(codes.VerificationURIComplete))
	userCode := regexp.MustCompile(`name="user_code" value="([^"]+)"`).FindStringSubmatch(form)[1]
	approve := page(browser.PostForm(front.URL+"/auth/device", url.Values{"csrf": {csrf.FindStringSubmatch(form)[1]}, "user_code": {userCode}}))
	if done := page(browser.PostForm(front.URL+"/auth/device/approve", url.Values{"csrf": {csrf.FindStringSubmatch(approve)[1]},
		"decision": {"approve"}})); !strings.Contains(done, "Device approved") {
		t.Fatalf("approve: %s", done)
	}
	code, body := post("/auth/device/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {codes.DeviceCode}})
	tok := regexp.MustCompile(`"access_token":"(sk-agent-[^"]+)"`).FindStringSubmatch(body)
	if code != http.StatusOK || tok == nil {
		t.Fatalf("poll: %d %s", code, body)
	}
	var chat map[string]any
	if code := call(t, "POST", front.URL+"/v1/chat/completions", tok[1], map[string]any{"model": "gpt-4o-mini",
		"messages": []map[string]string{{"role": "user", "content": "hi"}}}, &chat); code != http.StatusOK {
		t.Fatalf("chat with the agent token: %d %v", code, chat)
	}
	// The console: its SSO form, the page that moves on to the provider
	// (Refresh), the callback, the console page naming the person.
	signin := page(browser.Get(front.URL + "/console/signin"))
	res, err := browser.PostForm(front.URL+"/console/signin/sso", url.Values{"csrf": {csrf.FindStringSubmatch(signin)[1]}})
	onward := page(res, err)
	authorize, ok := strings.CutPrefix(res.Header.Get("Refresh"), "0; url=")
	if !ok {
		t.Fatalf("console SSO start: no Refresh to the provider: %s", onward)
	}
	res, err = browser.Get(authorize)
	page(res, err)
	if res.Request.URL.Path != "/auth/callback" || res.Header.Get("Refresh") != "0; url=/console/usage" {
		t.Fatalf("console SSO callback at %s, Refresh %q", res.Request.URL, res.Header.Get("Refresh"))
	}
	if usage := page(browser.Get(front.URL + "/console/usage")); !strings.Contains(usage, "Signed in as ada@example.com") {
		t.Fatalf("console after SSO: %s", usage)
	}
	if code, body := post("/auth/device/code", nil); code != http.StatusTooManyRequests || !strings.Contains(body, `"slow_down"`) {
		t.Errorf("a fifth start: %d %s, want 429 slow_down", code, body)
	}
	if logs := p.output.String(); strings.Contains(logs, tok[1]) || strings.Contains(logs, secret) || strings.Contains(logs, codes.DeviceCode) {
		t.Errorf("the logs carry a secret:\n%s", logs)
	}
}
