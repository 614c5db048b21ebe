package sso_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// TestDeviceLoginAcrossReplicas starts the login on replica A, comes back
// from the provider to replica B, where the person approves, and redeems
// the device code on replica C; the token then works on every replica, and
// its revocation on B reaches A and C within a second.
func TestDeviceLoginAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOptions{postgresURL: teststore.PostgresURL(t), replicas: 3,
		// The provider sends browsers back to B, as a load balancer might.
		callback: 1})
	a, b, c := e.reps[0], e.reps[1], e.reps[2]

	codes := startDevice(t, a.url, "laptop")
	br := newBrowser(t)
	page := br.enterCode(a.url, codes.UserCode)
	if page.status != http.StatusOK || !strings.HasPrefix(page.url, b.url+"/auth/device/approve") {
		t.Fatalf("approval page: %d at %s (want replica B %s)", page.status, page.url, b.url)
	}
	wantPollError(t, c.url, codes.DeviceCode, "authorization_pending")
	if done := br.decide(b.url, page, "approve"); done.status != http.StatusOK {
		t.Fatalf("approve on B: %d %s", done.status, done.body)
	}
	tok := e.redeem(t, c.url, codes.DeviceCode)
	e.clock.Advance(interval + time.Second)
	wantPollError(t, a.url, codes.DeviceCode, "invalid_grant")

	for _, r := range e.reps {
		if res := chat(t, r.url, tok); res.status != http.StatusOK {
			t.Fatalf("chat on %s: %d %s", r.url, res.status, res.body)
		}
	}
	u := e.nextUsage(t)
	if u.AgentTokenID == "" || u.UserID != e.idp.URL+"#user-1" {
		t.Errorf("usage row %+v", u)
	}

	agents, _, err := a.st.ListAgentTokens(t.Context(), store.AgentTokenFilter{})
	if err != nil || len(agents) != 1 {
		t.Fatalf("agent tokens: %v, %v", agents, err)
	}
	id := agents[0].ID
	if r := manageReq(t, b.url, http.MethodDelete, "/agent-tokens/"+id); r.status != http.StatusNoContent {
		t.Fatalf("revoke on B: %d %s", r.status, r.body)
	}
	revoked := time.Now()
	for _, r := range []*replica{a, c} {
		select {
		case got := <-r.invalidated:
			if got != id {
				t.Errorf("%s invalidated %s, want %s", r.url, got, id)
			}
		case <-time.After(time.Second - time.Since(revoked)):
			t.Fatalf("the revocation did not reach %s within 1s", r.url)
		}
		if res := chat(t, r.url, tok); res.status != http.StatusUnauthorized {
			t.Errorf("revoked token on %s: %d, want 401", r.url, res.status)
		}
	}
	t.Logf("revocation reached A and C %s after the DELETE returned", time.Since(revoked).Round(time.Millisecond))
}
