package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func newPending(label string) *store.PendingAuthorization {
	id := uuid.NewString()
	return &store.PendingAuthorization{
		ID:             id,
		DeviceCodeHash: "device-" + id,
		UserCodeHash:   "user-" + id,
		Status:         store.PendingStatusPending,
		Label:          label,
		ClientIP:       "192.0.2.7",
		CreatedAt:      base(),
		ExpiresAt:      base().Add(10 * time.Minute),
	}
}

func newAgentToken() *store.AgentToken {
	id := uuid.NewString()
	return &store.AgentToken{ID: id, Hash: "agent-" + id, Prefix: "sk-agent-x", IsActive: true,
		CreatedAt: base(), LastAuthenticatedAt: ptr(base()), AuthExpiresAt: base().Add(720 * time.Hour)}
}

func mustCreatePending(t *testing.T, s store.Store, p *store.PendingAuthorization) {
	t.Helper()
	if err := s.CreatePendingAuthorization(t.Context(), p); err != nil {
		t.Fatalf("CreatePendingAuthorization: %v", err)
	}
}

func poll(t *testing.T, s store.Store, hash string, at time.Time, tok *store.AgentToken) string {
	t.Helper()
	got, err := s.PollDeviceCode(t.Context(), hash, at, 5*time.Second, tok)
	if err != nil {
		t.Fatalf("PollDeviceCode: %v", err)
	}
	return got
}

func testPendingAuthorizationRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newPending("laptop <b>")
	mustCreatePending(t, s, p)
	want := *p
	want.CreatedAt, want.ExpiresAt = want.CreatedAt.UTC(), want.ExpiresAt.UTC()
	for name, get := range map[string]func() (*store.PendingAuthorization, error){
		"by id": func() (*store.PendingAuthorization, error) { return s.GetPendingAuthorization(ctx, p.ID) },
		"by user code": func() (*store.PendingAuthorization, error) {
			return s.GetPendingAuthorizationByUserCode(ctx, p.UserCodeHash)
		},
	} {
		got, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		requireUTC(t, got)
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	dup := newPending("dup")
	dup.UserCodeHash = p.UserCodeHash
	if err := s.CreatePendingAuthorization(ctx, dup); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate user code: %v, want ErrConflict", err)
	}
	for _, id := range []string{uuid.NewString(), "not-a-uuid"} {
		if _, err := s.GetPendingAuthorization(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetPendingAuthorization(%q): %v, want ErrNotFound", id, err)
		}
	}
}

func testDecidePendingAuthorization(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newPending("cli")
	mustCreatePending(t, s, p)
	now := base().Add(time.Minute)
	if err := s.DecidePendingAuthorization(ctx, p.ID, store.PendingStatusApproved, "https://idp", "sub-1", "a@example.com", now); err != nil {
		t.Fatalf("approve: %v", err)
	}
	got, err := s.GetPendingAuthorization(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.PendingStatusApproved || got.Provider != "https://idp" || got.Subject != "sub-1" || got.Email != "a@example.com" {
		t.Errorf("after approval: %+v", got)
	}
	if err := s.DecidePendingAuthorization(ctx, p.ID, store.PendingStatusDenied, "https://idp", "sub-2", "", now); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second decision: %v, want ErrConflict", err)
	}
	late := newPending("late")
	mustCreatePending(t, s, late)
	if err := s.DecidePendingAuthorization(ctx, late.ID, store.PendingStatusApproved, "i", "s", "", late.ExpiresAt); !errors.Is(err, store.ErrConflict) {
		t.Errorf("decision at expiry: %v, want ErrConflict", err)
	}
	if err := s.DecidePendingAuthorization(ctx, uuid.NewString(), store.PendingStatusApproved, "i", "s", "", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown: %v, want ErrNotFound", err)
	}
}

func testPollDeviceCode(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newPending("editor")
	mustCreatePending(t, s, p)
	at := base().Add(time.Second)
	if got := poll(t, s, p.DeviceCodeHash, at, nil); got != store.PollPending {
		t.Fatalf("first poll: %s, want pending", got)
	}
	if got := poll(t, s, p.DeviceCodeHash, at.Add(4*time.Second), nil); got != store.PollSlowDown {
		t.Fatalf("poll within the interval: %s, want slow_down", got)
	}
	at = at.Add(10 * time.Second)
	if got := poll(t, s, p.DeviceCodeHash, at, nil); got != store.PollPending {
		t.Fatalf("poll after the interval: %s, want pending", got)
	}
	if err := s.DecidePendingAuthorization(ctx, p.ID, store.PendingStatusApproved, "https://idp", "sub", "me@example.com", at); err != nil {
		t.Fatal(err)
	}
	tok := newAgentToken()
	at = at.Add(10 * time.Second)
	if got := poll(t, s, p.DeviceCodeHash, at, tok); got != store.PollIssued {
		t.Fatalf("poll after approval: %s, want issued", got)
	}
	if tok.Provider != "https://idp" || tok.Subject != "sub" || tok.Email != "me@example.com" || tok.Label != "editor" {
		t.Errorf("issued token identity: %+v", tok)
	}
	got, err := s.GetAgentTokenByHash(ctx, tok.Hash)
	if err != nil {
		t.Fatalf("the issued token: %v", err)
	}
	requireUTC(t, got)
	want := *tok
	want.CreatedAt, want.AuthExpiresAt, want.LastAuthenticatedAt = tok.CreatedAt.UTC(), tok.AuthExpiresAt.UTC(), ptr(tok.LastAuthenticatedAt.UTC())
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("stored agent token (-want +got):\n%s", diff)
	}
	if _, err := s.PollDeviceCode(ctx, p.DeviceCodeHash, at.Add(time.Minute), 5*time.Second, newAgentToken()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second redemption: %v, want ErrNotFound", err)
	}

	denied := newPending("denied")
	mustCreatePending(t, s, denied)
	if err := s.DecidePendingAuthorization(ctx, denied.ID, store.PendingStatusDenied, "i", "s", "", base()); err != nil {
		t.Fatal(err)
	}
	if got := poll(t, s, denied.DeviceCodeHash, base().Add(time.Second), newAgentToken()); got != store.PollDenied {
		t.Errorf("denied: %s", got)
	}
	expired := newPending("expired")
	mustCreatePending(t, s, expired)
	if got := poll(t, s, expired.DeviceCodeHash, expired.ExpiresAt, newAgentToken()); got != store.PollExpired {
		t.Errorf("at expiry: %s", got)
	}
	if got, _ := s.GetPendingAuthorization(ctx, expired.ID); got == nil || got.Status != store.PendingStatusExpired {
		t.Errorf("expired row: %+v", got)
	}
}

// testPollDeviceCodeRedeemsOnce polls one approved code concurrently: one
// poll gets the token, the others find no code.
func testPollDeviceCodeRedeemsOnce(t *testing.T, s store.Store) {
	p := newPending("race")
	mustCreatePending(t, s, p)
	if err := s.DecidePendingAuthorization(t.Context(), p.ID, store.PendingStatusApproved, "i", "s", "", base()); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		issued, absent int
	)
	for range n {
		wg.Go(func() {
			got, err := s.PollDeviceCode(t.Context(), p.DeviceCodeHash, base().Add(time.Minute), time.Second, newAgentToken())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && got == store.PollIssued:
				issued++
			case errors.Is(err, store.ErrNotFound):
				absent++
			default:
				t.Errorf("poll: %q, %v", got, err)
			}
		})
	}
	wg.Wait()
	if issued != 1 || absent != n-1 {
		t.Errorf("issued %d, not found %d; want 1 and %d", issued, absent, n-1)
	}
}

func testAgentTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	var ids []string
	for i, who := range []struct{ provider, subject, email string }{
		{"https://a", "1", "Ann@Example.com"}, {"https://a", "1", "ann@example.com"}, {"https://b", "1", "bob@example.com"},
	} {
		p := newPending("d")
		mustCreatePending(t, s, p)
		if err := s.DecidePendingAuthorization(ctx, p.ID, store.PendingStatusApproved, who.provider, who.subject, who.email, base()); err != nil {
			t.Fatal(err)
		}
		tok := newAgentToken()
		tok.CreatedAt = base().Add(time.Duration(i) * time.Minute)
		poll(t, s, p.DeviceCodeHash, base(), tok)
		ids = append(ids, tok.ID)
	}
	list := func(f store.AgentTokenFilter) ([]string, int) {
		t.Helper()
		got, total, err := s.ListAgentTokens(ctx, f)
		if err != nil {
			t.Fatalf("ListAgentTokens: %v", err)
		}
		var out []string
		for _, a := range got {
			out = append(out, a.ID)
		}
		return out, total
	}
	if got, total := list(store.AgentTokenFilter{}); total != 3 || !cmp.Equal(got, []string{ids[2], ids[1], ids[0]}) {
		t.Errorf("all, newest first: %v (total %d)", got, total)
	}
	if got, total := list(store.AgentTokenFilter{Email: "ANN@example.com"}); total != 2 || len(got) != 2 {
		t.Errorf("by email, any case: %v (total %d)", got, total)
	}
	if got, total := list(store.AgentTokenFilter{Provider: "https://b", Subject: "1"}); total != 1 || got[0] != ids[2] {
		t.Errorf("by identity: %v (total %d)", got, total)
	}
	if got, total := list(store.AgentTokenFilter{Page: store.Page{Page: 2, PageSize: 2}}); total != 3 || !cmp.Equal(got, []string{ids[0]}) {
		t.Errorf("page 2: %v (total %d)", got, total)
	}
	if err := s.RevokeAgentToken(ctx, ids[0]); err != nil {
		t.Fatalf("RevokeAgentToken: %v", err)
	}
	if err := s.RevokeAgentToken(ctx, ids[0]); err != nil {
		t.Fatalf("RevokeAgentToken again: %v", err)
	}
	if got, total := list(store.AgentTokenFilter{Active: ptr(false)}); total != 1 || got[0] != ids[0] {
		t.Errorf("inactive: %v (total %d)", got, total)
	}
	if a, err := s.GetAgentToken(ctx, ids[0]); err != nil || a.IsActive {
		t.Errorf("revoked token: %+v, %v", a, err)
	}
	for _, id := range []string{uuid.NewString(), "bad id"} {
		if err := s.RevokeAgentToken(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RevokeAgentToken(%q): %v, want ErrNotFound", id, err)
		}
		if _, err := s.GetAgentToken(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAgentToken(%q): %v, want ErrNotFound", id, err)
		}
	}
}

func testSSOSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newPending("d")
	mustCreatePending(t, s, p)
	sess := &store.SSOSession{ID: uuid.NewString(), SecretHash: "h-" + uuid.NewString(), State: "st", Nonce: "no",
		Verifier: "ve", PendingID: p.ID, CreatedAt: base(), ExpiresAt: base().Add(time.Hour)}
	if err := s.CreateSSOSession(ctx, sess); err != nil {
		t.Fatalf("CreateSSOSession: %v", err)
	}
	got, err := s.GetSSOSessionByHash(ctx, sess.SecretHash)
	if err != nil {
		t.Fatal(err)
	}
	requireUTC(t, got)
	want := *sess
	want.CreatedAt, want.ExpiresAt = sess.CreatedAt.UTC(), sess.ExpiresAt.UTC()
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("session (-want +got):\n%s", diff)
	}
	if err := s.CompleteSSOSession(ctx, sess.ID, "https://idp", "sub", "e@example.com"); err != nil {
		t.Fatalf("CompleteSSOSession: %v", err)
	}
	if err := s.CompleteSSOSession(ctx, sess.ID, "https://idp", "other", ""); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second completion: %v, want ErrConflict", err)
	}
	got, _ = s.GetSSOSessionByHash(ctx, sess.SecretHash)
	if got.State != "" || got.Nonce != "" || got.Verifier != "" || got.Subject != "sub" || got.Provider != "https://idp" {
		t.Errorf("completed session: %+v", got)
	}
	plain := &store.SSOSession{ID: uuid.NewString(), SecretHash: "h2", State: "x", ReturnTo: store.SSOReturnConsole,
		CreatedAt: base(), ExpiresAt: base().Add(time.Hour)}
	if err := s.CreateSSOSession(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSSOSessionByHash(ctx, "h2"); got == nil || got.PendingID != "" || got.ReturnTo != store.SSOReturnConsole {
		t.Errorf("console session without pending id: %+v", got)
	}
	if err := s.DeleteSSOSession(ctx, plain.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSSOSessionByHash(ctx, "h2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted session: %v", err)
	}
	if err := s.CompleteSSOSession(ctx, uuid.NewString(), "", "", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown session: %v", err)
	}
}

func testCountAuthFailure(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	for want := 1; want <= 3; want++ {
		n, err := s.CountAuthFailure(ctx, "device:192.0.2.1", now.Add(time.Duration(want)*time.Second), now.Add(-time.Hour))
		if err != nil || n != want {
			t.Fatalf("failure %d: %d, %v", want, n, err)
		}
	}
	until := now.Add(time.Minute)
	recordBlocks(t, s, store.AuthBlock{Identifier: "device:192.0.2.1", FailedAttempts: 3, LastAttemptAt: now, BlockedUntil: until})
	b, err := s.GetAuthBlock(ctx, "device:192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	requireUTC(t, b)
	if b.FailedAttempts != 3 || !b.BlockedUntil.Equal(until) {
		t.Errorf("block: %+v", b)
	}
	// A failure long after the last one starts the count again, and keeps
	// the block.
	n, err := s.CountAuthFailure(ctx, "device:192.0.2.1", now.Add(2*time.Hour), now.Add(time.Hour))
	if err != nil || n != 1 {
		t.Errorf("after the reset period: %d, %v; want 1", n, err)
	}
	if b, _ := s.GetAuthBlock(ctx, "device:192.0.2.1"); b == nil || !b.BlockedUntil.Equal(until) {
		t.Errorf("block after a count: %+v", b)
	}
	if b, err := s.GetAuthBlock(ctx, "device:192.0.2.2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown identifier: %+v, %v", b, err)
	}
	if n, _ := s.CountAuthFailure(ctx, "device:192.0.2.2", now, now); n != 1 {
		t.Errorf("unblocked identifier: %d", n)
	}
	if b, _ := s.GetAuthBlock(ctx, "device:192.0.2.2"); b == nil || !b.BlockedUntil.IsZero() {
		t.Errorf("unblocked identifier's row: %+v", b)
	}
}

func testSSORetention(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := newPending("old")
	old.ExpiresAt = base().Add(-time.Hour)
	mustCreatePending(t, s, old)
	fresh := newPending("fresh")
	mustCreatePending(t, s, fresh)
	if n, err := s.DeletePendingAuthorizationsExpiredBefore(ctx, base(), 10); err != nil || n != 1 {
		t.Errorf("DeletePendingAuthorizationsExpiredBefore: %d, %v", n, err)
	}
	if _, err := s.GetPendingAuthorization(ctx, fresh.ID); err != nil {
		t.Errorf("unexpired authorization: %v", err)
	}
	for _, exp := range []time.Time{base().Add(-time.Hour), base().Add(time.Hour)} {
		p := newPending("x")
		mustCreatePending(t, s, p)
		if err := s.DecidePendingAuthorization(ctx, p.ID, store.PendingStatusApproved, "i", "s", "", base()); err != nil {
			t.Fatal(err)
		}
		tok := newAgentToken()
		tok.AuthExpiresAt = exp
		poll(t, s, p.DeviceCodeHash, base(), tok)
	}
	if n, err := s.DeleteAgentTokensExpiredBefore(ctx, base(), 10); err != nil || n != 1 {
		t.Errorf("DeleteAgentTokensExpiredBefore: %d, %v", n, err)
	}
	for i, exp := range []time.Time{base().Add(-time.Hour), base().Add(time.Hour)} {
		sess := &store.SSOSession{ID: uuid.NewString(), SecretHash: "s" + string(rune('a'+i)), CreatedAt: base(), ExpiresAt: exp}
		if err := s.CreateSSOSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeleteSSOSessionsExpiredBefore(ctx, base(), 10); err != nil || n != 1 {
		t.Errorf("DeleteSSOSessionsExpiredBefore: %d, %v", n, err)
	}
}
