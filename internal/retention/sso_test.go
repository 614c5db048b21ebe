package retention

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// seedLogin stores, of each kind of device-login state, one row past its
// retention and one within it.
func seedLogin(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	for i, exp := range []time.Time{now.Add(-2 * time.Hour), now.Add(-time.Minute), now.Add(-2 * time.Hour), now.Add(time.Hour)} {
		id := uuid.NewString()
		p := &store.PendingAuthorization{ID: id, DeviceCodeHash: "d" + id, UserCodeHash: "u" + id, Status: store.PendingStatusPending,
			CreatedAt: exp.Add(-10 * time.Minute), ExpiresAt: exp}
		if i >= 2 {
			p.ExpiresAt = now.Add(time.Hour)
		}
		if err := s.CreatePendingAuthorization(ctx, p); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			continue
		}
		// The last two are redeemed: an agent token expired two days ago,
		// and one that expires tomorrow; each with a browser sign-in.
		if err := s.DecidePendingAuthorization(ctx, id, store.PendingStatusApproved, "i", "s", "", now); err != nil {
			t.Fatal(err)
		}
		tokExp := now.Add(-2 * day)
		if i == 3 {
			tokExp = now.Add(day)
		}
		tok := &store.AgentToken{ID: uuid.NewString(), Hash: "h" + id, Prefix: "sk-agent-", IsActive: true, CreatedAt: now.Add(-3 * day),
			AuthExpiresAt: tokExp}
		if got, err := s.PollDeviceCode(ctx, p.DeviceCodeHash, now, time.Second, tok); err != nil || got != store.PollIssued {
			t.Fatalf("PollDeviceCode: %q, %v", got, err)
		}
		sess := &store.SSOSession{ID: uuid.NewString(), SecretHash: "s" + id, CreatedAt: exp.Add(-time.Hour), ExpiresAt: exp}
		if err := s.CreateSSOSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSweepDeletesExpiredLoginState(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.open(t)
			seedLogin(t, s)
			sw := New(s, Options{Tokens: day, Now: func() time.Time { return now }})
			res, ran, err := sw.SweepOnce(t.Context())
			if err != nil || !ran {
				t.Fatalf("SweepOnce = (%+v, %t, %v)", res, ran, err)
			}
			if want := (Result{AgentTokens: 1, PendingAuthorizations: 1, SSOSessions: 1}); rowsOf(res) != want {
				t.Errorf("SweepOnce deleted %+v, want %+v", res, want)
			}
			if all, total, err := s.ListAgentTokens(t.Context(), store.AgentTokenFilter{}); err != nil || total != 1 || !all[0].AuthExpiresAt.After(now) {
				t.Errorf("agent tokens left: %d, %v", total, err)
			}
		})
	}
}
