package sso_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/sso"
)

// TestLoginRunsTheAgentSide runs sso.Login (proxy login) against the proxy
// while a person approves in a browser; its waits advance the proxy's
// clock instead of sleeping.
func TestLoginRunsTheAgentSide(t *testing.T) {
	for _, tc := range []struct {
		decision string
		want     string // the error; "" for a token
	}{{"approve", ""}, {"deny", "denied"}} {
		t.Run(tc.decision, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			var prompt bytes.Buffer
			var waits []time.Duration
			decided := false
			tok, err := sso.Login(t.Context(), sso.LoginOptions{BaseURL: e.url() + "/", Label: "ci box", Prompt: &prompt,
				Sleep: func(_ context.Context, d time.Duration) error {
					waits = append(waits, d)
					if len(waits) == 3 && !decided {
						decided = true
						link := regexp.MustCompile(`http://\S+user_code=\S+`).FindString(prompt.String())
						code := link[strings.LastIndex(link, "=")+1:]
						b := newBrowser(t)
						b.decide(e.url(), b.enterCode(e.url(), code), tc.decision)
					}
					if len(waits) != 2 { // the second poll comes too early: slow_down
						e.clock.Advance(d)
					}
					return nil
				}})
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Login: %q, %v; want an error naming %q", tok, err, tc.want)
				}
				return
			}
			if err != nil || !strings.HasPrefix(tok, "sk-agent-") {
				t.Fatalf("Login: %q, %v", tok, err)
			}
			if want := []time.Duration{interval, interval, interval + 5*time.Second}; !equalDurations(waits, want) {
				t.Errorf("waits %v, want %v (slower after slow_down)", waits, want)
			}
			if !strings.Contains(prompt.String(), "/auth/device?user_code=") {
				t.Errorf("prompt %q lacks the verification link", prompt.String())
			}
			if r := chat(t, e.url(), tok); r.status != 200 {
				t.Errorf("the token: %d", r.status)
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
