package sso_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/sso"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/idp"
)

// TestDeviceLoginEndToEnd runs the whole flow over HTTP: device code, the
// verification page, sign-in at the provider, approval, polling, and a
// chat completion with the agent token whose usage row names the person.
func TestDeviceLoginEndToEnd(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	c := startDevice(t, base, `Ada's <script>alert(1)</script> laptop`)
	if c.VerificationURI != base+"/auth/device" || c.VerificationURIComplete != base+"/auth/device?user_code="+url.QueryEscape(c.UserCode) ||
		c.ExpiresIn != int(codeTTL/time.Second) || c.Interval != int(interval/time.Second) {
		t.Fatalf("device code answer: %+v", c)
	}
	wantPollError(t, base, c.DeviceCode, "authorization_pending")

	b := newBrowser(t)
	page := b.enterCode(base, strings.ToLower(strings.ReplaceAll(c.UserCode, "-", " ")))
	if page.status != http.StatusOK || !strings.Contains(page.body, "Approve this device?") || !strings.Contains(page.body, "ada@example.com") {
		t.Fatalf("approval page: %d %s", page.status, page.body)
	}
	if strings.Contains(page.body, "<script>") || !strings.Contains(page.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the device label is not escaped on the approval page: %s", page.body)
	}
	for _, u := range b.visited {
		if strings.HasPrefix(u, e.idp.URL+"/authorize") {
			q, _ := url.Parse(u)
			if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("nonce") == "" || q.Query().Get("state") == "" {
				t.Errorf("authorization request without PKCE S256, nonce or state: %s", u)
			}
		}
	}
	if e.idp.Logins() != 1 {
		t.Errorf("%d sign-ins at the provider, want 1", e.idp.Logins())
	}
	e.clock.Advance(interval + time.Second)
	wantPollError(t, base, c.DeviceCode, "authorization_pending")

	done := b.decide(base, page, "approve")
	if done.status != http.StatusOK || !strings.Contains(done.body, "Device approved") {
		t.Fatalf("approve: %d %s", done.status, done.body)
	}
	tok := e.redeem(t, base, c.DeviceCode)
	e.clock.Advance(interval + time.Second)
	wantPollError(t, base, c.DeviceCode, "invalid_grant") // redeemed once

	r := chat(t, base, tok)
	if r.status != http.StatusOK || !strings.Contains(r.body, "chat.completion") {
		t.Fatalf("chat with the agent token: %d %s", r.status, r.body)
	}
	u := e.nextUsage(t)
	agents, _, err := e.reps[0].st.ListAgentTokens(t.Context(), store.AgentTokenFilter{})
	if err != nil || len(agents) != 1 {
		t.Fatalf("agent tokens: %v, %v", agents, err)
	}
	a := agents[0]
	if u.AgentTokenID != a.ID || u.TokenID != "" || u.UserID != e.idp.URL+"#user-1" || u.Status != http.StatusOK || u.TotalTokens == 0 {
		t.Errorf("usage row %+v; want agent token %s and user %s", u, a.ID, e.idp.URL+"#user-1")
	}
	if a.Email != "ada@example.com" || a.Provider != e.idp.URL || a.Subject != "user-1" || a.Label != `Ada's <script>alert(1)</script> laptop` ||
		!strings.HasPrefix(tok, a.Prefix) || a.Hash == tok {
		t.Errorf("stored agent token %+v", a)
	}
	if logs := e.logs.String(); strings.Contains(logs, tok) || strings.Contains(logs, clientSecret) || strings.Contains(logs, c.DeviceCode) {
		t.Errorf("the logs carry a secret:\n%s", logs)
	}
	for _, v := range b.visited {
		if strings.Contains(v, tok) {
			t.Errorf("a URL carries the agent token: %s", v)
		}
	}
	// The recorder writes audit events in batches of their own, so the
	// usage row above does not mean they are in yet: wait for both to be
	// written, then check the store holds them.
	written := map[string]bool{}
	for timeout := time.After(10 * time.Second); !written["device.approve"] || !written["agent_token.issue"]; {
		select {
		case a := <-e.audited:
			written[a] = true
		case <-timeout:
			t.Fatalf("audit events written %v after 10s, want device.approve and agent_token.issue", written)
		}
	}
	audit, _, err := e.reps[0].st.ListAuditEvents(t.Context(), store.AuditFilter{Page: store.Page{Page: 1, PageSize: 50}})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, ev := range audit {
		actions[ev.Action] = true
	}
	if !actions["device.approve"] || !actions["agent_token.issue"] {
		t.Errorf("audit actions in the store %v, want device.approve and agent_token.issue", actions)
	}
}

func TestPollingLimitsAndExpiry(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	c := startDevice(t, base, "cli")
	wantPollError(t, base, c.DeviceCode, "authorization_pending")
	wantPollError(t, base, c.DeviceCode, "slow_down")
	e.clock.Advance(interval - time.Second)
	wantPollError(t, base, c.DeviceCode, "slow_down") // the too-fast poll counts as the last one
	e.clock.Advance(interval)
	wantPollError(t, base, c.DeviceCode, "authorization_pending")

	e.clock.Advance(codeTTL)
	wantPollError(t, base, c.DeviceCode, "expired_token")
	b := newBrowser(t)
	if r := b.enterCode(base, c.UserCode); r.status != http.StatusGone || !strings.Contains(r.body, "Code expired") {
		t.Errorf("entering an expired code: %d %s", r.status, r.body)
	}
	wantPollError(t, base, "no-such-device-code", "invalid_grant")

	form := url.Values{"grant_type": {"password"}, "device_code": {c.DeviceCode}}
	req, _ := http.NewRequest(http.MethodPost, base+"/auth/device/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := send(t, http.DefaultClient, req); r.status != http.StatusBadRequest || r.json(t)["error"] != "unsupported_grant_type" {
		t.Errorf("another grant type: %d %s", r.status, r.body)
	}
}

func TestDenyAndDeviceLabelChecks(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	c := startDevice(t, base, "tablet")
	b := newBrowser(t)
	page := b.enterCode(base, c.UserCode)
	if r := b.decide(base, page, "deny"); r.status != http.StatusOK || !strings.Contains(r.body, "Device denied") {
		t.Fatalf("deny: %d %s", r.status, r.body)
	}
	wantPollError(t, base, c.DeviceCode, "access_denied")
	if r := b.decide(base, page, "approve"); r.status != http.StatusConflict || !strings.Contains(r.body, "Already decided") {
		t.Errorf("approving after a denial: %d %s", r.status, r.body)
	}
	if r := deviceCode(t, base, url.Values{"client_name": {"bad\x00label"}}); r.status != http.StatusBadRequest || r.json(t)["error"] != "invalid_request" {
		t.Errorf("a label with a control character: %d %s", r.status, r.body)
	}
}

// TestWrongUserCodesBackOff enters wrong codes from one address: four are
// answered with a warning, the fifth blocks the address with a growing
// wait, another address is unaffected, and the right code works once the
// block is over.
func TestWrongUserCodesBackOff(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	c := startDevice(t, base, "cli")
	attacker := newBrowser(t)
	attacker.header.Set("X-Forwarded-For", "198.51.100.7")
	form := attacker.get(base + "/auth/device")
	tok := csrf(t, form)
	try := func(b *browser, code string) response {
		return b.post(base+"/auth/device", url.Values{"csrf": {tok}, "user_code": {code}})
	}
	for i := range sso.FreeAttempts {
		r := try(attacker, "BBBB-BBBB")
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "That code is not valid") {
			t.Fatalf("wrong code %d: %d %s", i+1, r.status, r.body)
		}
	}
	r := try(attacker, "BBBB-BBBB")
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "30" || !strings.Contains(r.body, "Try again in 30 seconds") {
		t.Fatalf("fifth wrong code: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if r := try(attacker, c.UserCode); r.status != http.StatusTooManyRequests {
		t.Errorf("the right code while blocked: %d, want 429", r.status)
	}

	other := newBrowser(t)
	other.header.Set("X-Forwarded-For", "203.0.113.9")
	otherForm := other.get(base + "/auth/device")
	if r := other.post(base+"/auth/device", url.Values{"csrf": {csrf(t, otherForm)}, "user_code": {"CCCC-CCCC"}}); r.status != http.StatusBadRequest {
		t.Errorf("another address: %d, want 400 (not blocked)", r.status)
	}

	e.clock.Advance(31 * time.Second)
	if r := try(attacker, "BBBB-BBBB"); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "60" {
		t.Fatalf("sixth wrong code: %d Retry-After %q, want 429 and a doubled wait", r.status, r.header.Get("Retry-After"))
	}
	e.clock.Advance(61 * time.Second)
	page := try(attacker, c.UserCode)
	if page.status != http.StatusOK || !strings.Contains(page.body, "Approve this device?") {
		t.Fatalf("the right code after the block: %d %s", page.status, page.body)
	}
	b, err := e.reps[0].st.GetAuthBlock(t.Context(), "device-code:198.51.100.7")
	if err != nil || b.FailedAttempts != 6 {
		t.Errorf("auth_rate_limits row: %+v, %v", b, err)
	}
}

// TestForgedIDTokensAreRefused signs the person in with ID tokens a relying
// party must refuse; the device stays unapproved.
func TestForgedIDTokensAreRefused(t *testing.T) {
	e := newEnv(t, envOptions{domains: []string{"example.com"}})
	base := e.url()
	honest := idp.User{Subject: "user-1", Email: "ada@example.com", EmailVerified: true}
	for _, tc := range []struct {
		name   string
		forge  func(*idp.Claims)
		badSig bool
		user   idp.User
		reason string
	}{
		{name: "wrong signature", badSig: true, user: honest, reason: "could not be verified"},
		{name: "wrong audience", forge: func(c *idp.Claims) { c.Audience = "someone-else" }, user: honest, reason: "could not be verified"},
		{name: "wrong issuer", forge: func(c *idp.Claims) { c.Issuer = "https://evil.example" }, user: honest, reason: "could not be verified"},
		{name: "expired", forge: func(c *idp.Claims) { c.Expiry = time.Now().Add(-time.Hour).Unix() }, user: honest, reason: "could not be verified"},
		{name: "wrong nonce", forge: func(c *idp.Claims) { c.Nonce = "replayed-nonce" }, user: honest, reason: "could not be verified"},
		{name: "unverified email", user: idp.User{Subject: "u2", Email: "ada@example.com"}, reason: "did not confirm an email"},
		{name: "disallowed domain", user: idp.User{Subject: "u3", Email: "eve@evil.test", EmailVerified: true}, reason: "domain may not sign in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.idp.Forge(tc.forge)
			e.idp.SignWithUnknownKey(tc.badSig)
			e.idp.SetUser(tc.user)
			c := startDevice(t, base, "cli")
			r := newBrowser(t).enterCode(base, c.UserCode)
			if r.status != http.StatusForbidden || !strings.Contains(r.body, "Sign-in refused") || !strings.Contains(r.body, tc.reason) {
				t.Errorf("callback: %d %s; want 403 naming %q", r.status, r.body, tc.reason)
			}
			wantPollError(t, base, c.DeviceCode, "authorization_pending")
		})
	}
	e.idp.Forge(nil)
	e.idp.SignWithUnknownKey(false)
	e.idp.SetUser(honest)
	if tok, _ := e.issue(t, base, "after"); tok == "" {
		t.Error("an honest sign-in after the forged ones failed")
	}
}

func TestCallbackStateAndReplay(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	c := startDevice(t, base, "cli")
	b := newBrowser(t)
	b.enterCode(base, c.UserCode)
	var callback string
	for _, u := range b.visited {
		if strings.Contains(u, "/auth/callback") {
			callback = u
		}
	}
	if callback == "" {
		t.Fatalf("no callback among %v", b.visited)
	}
	if r := b.get(callback); r.status != http.StatusBadRequest || !strings.Contains(r.body, "already completed") {
		t.Errorf("replayed callback: %d %s", r.status, r.body)
	}
	if r := newBrowser(t).get(callback); r.status != http.StatusBadRequest || !strings.Contains(r.body, "no sign-in is in progress") {
		t.Errorf("callback in another browser: %d %s", r.status, r.body)
	}

	c2 := startDevice(t, base, "cli")
	b2 := newBrowser(t)
	form := b2.get(base + "/auth/device")
	noFollow := *b2.c
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodPost, base+"/auth/device", strings.NewReader(url.Values{"csrf": {csrf(t, form)}, "user_code": {c2.UserCode}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := send(t, &noFollow, req); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), e.idp.URL+"/authorize?") {
		t.Fatalf("code submission: %d, Location %q", r.status, r.header.Get("Location"))
	}
	forged := base + "/auth/callback?code=anything&state=forged-state"
	if r := b2.get(forged); r.status != http.StatusBadRequest || !strings.Contains(r.body, "state") {
		t.Errorf("callback with a forged state: %d %s", r.status, r.body)
	}
	if r := b2.get(base + "/auth/callback?error=access_denied&state=x"); r.status != http.StatusBadRequest {
		t.Errorf("provider error with a forged state: %d", r.status)
	}
	wantPollError(t, base, c2.DeviceCode, "authorization_pending")
}

func TestCSRFIsRequired(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	c := startDevice(t, base, "cli")
	b := newBrowser(t)
	b.get(base + "/auth/device")
	if r := b.post(base+"/auth/device", url.Values{"user_code": {c.UserCode}}); r.status != http.StatusForbidden {
		t.Errorf("code form without CSRF token: %d", r.status)
	}
	if r := b.post(base+"/auth/device", url.Values{"user_code": {c.UserCode}, "csrf": {"forged"}}); r.status != http.StatusForbidden {
		t.Errorf("code form with a wrong CSRF token: %d", r.status)
	}
	page := b.enterCode(base, c.UserCode)
	if r := b.post(base+"/auth/device/approve", url.Values{"decision": {"approve"}}); r.status != http.StatusForbidden {
		t.Errorf("approval without CSRF token: %d", r.status)
	}
	// The code form's token is not the signed-in session's.
	form := b.get(base + "/auth/device")
	if r := b.post(base+"/auth/device/approve", url.Values{"decision": {"approve"}, "csrf": {csrf(t, form)}}); r.status != http.StatusForbidden {
		t.Errorf("approval with the code form's token: %d", r.status)
	}
	e.clock.Advance(interval)
	wantPollError(t, base, c.DeviceCode, "authorization_pending")
	if r := b.decide(base, page, "approve"); r.status != http.StatusOK {
		t.Fatalf("approval with the page's token: %d %s", r.status, r.body)
	}
	tok := e.redeem(t, base, c.DeviceCode)
	devices := b.get(base + "/auth/devices")
	id := regexp1(t, devices.body, `/auth/devices/([0-9a-f-]{36})/revoke`)
	if r := b.post(base+"/auth/devices/"+id+"/revoke", url.Values{}); r.status != http.StatusForbidden {
		t.Errorf("revocation without CSRF token: %d", r.status)
	}
	if r := chat(t, base, tok); r.status != http.StatusOK {
		t.Errorf("the token after a refused revocation: %d", r.status)
	}
}

func TestDevicesPageListsAndRevokes(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	tok1, b := e.issue(t, base, "laptop <one>")
	tok2, _ := e.issue(t, base, "desktop")
	e.idp.SetUser(idp.User{Subject: "user-2", Email: "bob@example.com", EmailVerified: true})
	tokBob, bob := e.issue(t, base, "bob's box")

	page := b.get(base + "/auth/devices")
	if page.status != http.StatusOK || !strings.Contains(page.body, "laptop &lt;one&gt;") || !strings.Contains(page.body, "desktop") ||
		strings.Contains(page.body, "bob&#39;s box") || strings.Contains(page.body, tok1) {
		t.Fatalf("devices page: %d %s", page.status, page.body)
	}
	bobPage := bob.get(base + "/auth/devices")
	bobID := regexp1(t, bobPage.body, `/auth/devices/([0-9a-f-]{36})/revoke`)
	if r := b.post(base+"/auth/devices/"+bobID+"/revoke", url.Values{"csrf": {csrf(t, page)}}); r.status != http.StatusNotFound {
		t.Errorf("revoking another person's device: %d", r.status)
	}
	if r := chat(t, base, tokBob); r.status != http.StatusOK {
		t.Errorf("bob's token after a refused revocation: %d", r.status)
	}
	if r := chat(t, base, tok1); r.status != http.StatusOK {
		t.Fatalf("token 1 before revocation: %d %s", r.status, r.body)
	}
	agents, _, _ := e.reps[0].st.ListAgentTokens(t.Context(), store.AgentTokenFilter{Email: "ada@example.com"})
	var id1 string
	for _, a := range agents {
		if strings.HasPrefix(tok1, a.Prefix) && a.Label == "laptop <one>" {
			id1 = a.ID
		}
	}
	after := b.post(base+"/auth/devices/"+id1+"/revoke", url.Values{"csrf": {csrf(t, page)}})
	if after.status != http.StatusOK || !strings.Contains(after.body, "revoked") {
		t.Fatalf("revoke: %d %s", after.status, after.body)
	}
	if r := chat(t, base, tok1); r.status != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", r.status)
	}
	if r := chat(t, base, tok2); r.status != http.StatusOK {
		t.Errorf("the other device's token: %d", r.status)
	}
	if r := newBrowser(t).post(base+"/auth/devices/"+id1+"/revoke", url.Values{"csrf": {"x"}}); r.status != http.StatusBadRequest {
		t.Errorf("revocation without a session: %d", r.status)
	}

	// A new browser: the page offers to sign in, and a GET alone opens no
	// sign-in.
	e.idp.SetUser(idp.User{Subject: "user-1", Email: "ada@example.com", EmailVerified: true})
	fresh := newBrowser(t)
	logins := e.idp.Logins()
	offer := fresh.get(base + "/auth/devices")
	if offer.status != http.StatusOK || !strings.Contains(offer.body, "Sign in") || e.idp.Logins() != logins {
		t.Fatalf("devices page without a session: %d %s", offer.status, offer.body)
	}
	if r := fresh.post(base+"/auth/devices/signin", url.Values{}); r.status != http.StatusForbidden {
		t.Errorf("sign-in without CSRF token: %d", r.status)
	}
	list := fresh.post(base+"/auth/devices/signin", url.Values{"csrf": {csrf(t, offer)}})
	if list.status != http.StatusOK || !strings.HasSuffix(list.url, "/auth/devices") || !strings.Contains(list.body, "desktop") ||
		!strings.Contains(list.body, "revoked") {
		t.Errorf("after signing in: %d at %s %s", list.status, list.url, list.body)
	}
}

func TestExpiredAgentTokenNamesTheDeviceFlow(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok, _ := e.issue(t, e.url(), "cli")
	if r := chat(t, e.url(), tok); r.status != http.StatusOK {
		t.Fatalf("fresh token: %d", r.status)
	}
	e.clock.Advance(tokenTTL)
	r := chat(t, e.url(), tok)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "/auth/device/code") {
		t.Errorf("expired agent token: %d %s; want 401 naming /auth/device/code", r.status, r.body)
	}
}

func TestManageAgentTokens(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := e.url()
	tok, _ := e.issue(t, base, "ci runner")
	e.idp.SetUser(idp.User{Subject: "user-2", Email: "bob@example.com", EmailVerified: true})
	e.issue(t, base, "bob")

	r := manageReq(t, base, http.MethodGet, "/agent-tokens?email=ADA@example.com&active=true&page=1&page_size=10")
	if r.status != http.StatusOK {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	v := r.json(t)
	data := v["data"].([]any)
	if len(data) != 1 || v["pagination"].(map[string]any)["total"] != float64(1) {
		t.Fatalf("list by email: %s", r.body)
	}
	row := data[0].(map[string]any)
	if row["label"] != "ci runner" || row["user_id"] != e.idp.URL+"#user-1" || strings.Contains(r.body, tok) || row["is_active"] != true {
		t.Errorf("row %v", row)
	}
	if r := manageReq(t, base, http.MethodGet, "/agent-tokens?bogus=1"); r.status != http.StatusBadRequest {
		t.Errorf("unknown filter: %d", r.status)
	}
	if r := manageReq(t, base, http.MethodDelete, "/agent-tokens/"+row["id"].(string)); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := chat(t, base, tok); r.status != http.StatusUnauthorized {
		t.Errorf("after DELETE: %d, want 401", r.status)
	}
	if r := manageReq(t, base, http.MethodDelete, "/agent-tokens/"+row["id"].(string)); r.status != http.StatusNoContent {
		t.Errorf("second delete: %d", r.status)
	}
	if r := manageReq(t, base, http.MethodDelete, "/agent-tokens/00000000-0000-0000-0000-000000000000"); r.status != http.StatusNotFound {
		t.Errorf("unknown id: %d", r.status)
	}
	if r := manageReq(t, base, http.MethodGet, "/agent-tokens?active=false"); !strings.Contains(r.body, `"total":1`) {
		t.Errorf("inactive list: %s", r.body)
	}
}

func TestDeviceEndpointsWaitForTheProject(t *testing.T) {
	e := newEnv(t, envOptions{noProject: true})
	r := deviceCode(t, e.url(), url.Values{})
	if r.status != http.StatusServiceUnavailable || r.json(t)["error"] != "temporarily_unavailable" ||
		!strings.Contains(r.body, "SSO_PROJECT") {
		t.Fatalf("without the project: %d %s", r.status, r.body)
	}
	e.createProject("http://127.0.0.1:1")
	if r := deviceCode(t, e.url(), url.Values{}); r.status != http.StatusOK {
		t.Errorf("once the project exists: %d %s", r.status, r.body)
	}
}

func regexp1(t *testing.T, s, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%s not found in %s", pattern, s)
	}
	return m[1]
}
