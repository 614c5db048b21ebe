package auth_test

import (
	"context"
	"errors"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// agentStore counts the agent token and project lookups.
type agentStore struct {
	store.Store
	lookups  atomic.Int64
	projects atomic.Int64
}

func (s *agentStore) GetProject(ctx context.Context, id string) (*store.Project, error) {
	s.projects.Add(1)
	return s.Store.GetProject(ctx, id)
}

func (s *agentStore) GetAgentTokenByHash(ctx context.Context, hash string) (*store.AgentToken, error) {
	s.lookups.Add(1)
	return s.Store.GetAgentTokenByHash(ctx, hash)
}

// issueAgentToken stores an agent token through the device flow's store
// calls, as internal/sso does, and returns its secret.
func issueAgentToken(t testing.TB, st store.Store, now time.Time, ttl time.Duration) (string, *store.AgentToken) {
	t.Helper()
	ctx := t.Context()
	id := uuid.NewString()
	p := &store.PendingAuthorization{ID: id, DeviceCodeHash: "d" + id, UserCodeHash: "u" + id, Status: store.PendingStatusPending,
		Label: "laptop", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := st.CreatePendingAuthorization(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.DecidePendingAuthorization(ctx, id, store.PendingStatusApproved, "https://idp.example", "sub-1", "a@example.com", now); err != nil {
		t.Fatal(err)
	}
	sec, prefix, hash, err := auth.NewAgentToken()
	if err != nil {
		t.Fatal(err)
	}
	tok := &store.AgentToken{ID: uuid.NewString(), Hash: hash, Prefix: prefix, IsActive: true, CreatedAt: now, AuthExpiresAt: now.Add(ttl)}
	if got, err := st.PollDeviceCode(ctx, p.DeviceCodeHash, now, time.Second, tok); err != nil || got != store.PollIssued {
		t.Fatalf("PollDeviceCode: %q, %v", got, err)
	}
	return sec, tok
}

func TestNewAgentToken(t *testing.T) {
	format := regexp.MustCompile(`^sk-agent-[A-Za-z0-9_-]{43}$`)
	sec, prefix, hash, err := auth.NewAgentToken()
	if err != nil {
		t.Fatal(err)
	}
	if !format.MatchString(sec) || len(sec) != auth.AgentTokenLen || prefix != sec[:auth.AgentPrefixLen] || hash != auth.Hash(sec) {
		t.Fatalf("NewAgentToken: %q %q %q", sec, prefix, hash)
	}
}

func TestAgentTokenAuthenticatesThroughTheCache(t *testing.T) {
	f := newFixture(t, auth.Options{TTL: time.Hour})
	proj := f.newProject(t)
	agents := &agentStore{Store: f.db}
	for name, ref := range map[string]string{"by id": proj.ID, "by name": proj.Name} {
		t.Run(name, func(t *testing.T) {
			a := auth.New(f.st, f.cipher, auth.Options{TTL: time.Hour, Now: f.clock.Now, Agents: agents, AgentProject: ref})
			sec, tok := issueAgentToken(t, f.db, f.clock.Now(), time.Hour)
			before := agents.lookups.Load()
			for range 3 {
				p, err := a.Authenticate(t.Context(), sec)
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if p.Agent == nil || p.Agent.ID != tok.ID || p.Token.ID != tok.ID || p.Project.ID != proj.ID ||
					p.APIKey != upstreamKey || p.Token.MaxRequests != nil || !p.Token.ExpiresAt.Equal(tok.AuthExpiresAt) {
					t.Fatalf("principal: %+v", p)
				}
				if p.Agent.UserID() != "https://idp.example#sub-1" || p.Identity != p.Agent.UserID() {
					t.Errorf("user id %q, identity %q", p.Agent.UserID(), p.Identity)
				}
			}
			if n := agents.lookups.Load() - before; n != 1 {
				t.Errorf("%d agent token lookups for 3 requests, want 1 (cached)", n)
			}
			if err := f.db.RevokeAgentToken(t.Context(), tok.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Authenticate(t.Context(), sec); err != nil {
				t.Fatalf("before invalidation the cached token still works: %v", err)
			}
			a.InvalidateToken(tok.ID)
			if _, err := a.Authenticate(t.Context(), sec); !errors.Is(err, auth.ErrRevoked) {
				t.Fatalf("after revocation: %v, want ErrRevoked", err)
			}
		})
	}
}

// TestColdAgentTokensShareTheProject checks that a cold agent token costs
// one lookup: the agent project is cached across tokens until its TTL or
// an invalidation.
func TestColdAgentTokensShareTheProject(t *testing.T) {
	f := newFixture(t, auth.Options{})
	proj := f.newProject(t)
	agents := &agentStore{Store: f.db}
	a := auth.New(f.st, f.cipher, auth.Options{TTL: time.Minute, Now: f.clock.Now, Agents: agents, AgentProject: proj.ID})
	authenticate := func(sec string) *auth.Principal {
		t.Helper()
		p, err := a.Authenticate(t.Context(), sec)
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		return p
	}
	for range 3 {
		sec, _ := issueAgentToken(t, f.db, f.clock.Now(), time.Hour)
		if p := authenticate(sec); p.Project.ID != proj.ID || p.APIKey != upstreamKey {
			t.Fatalf("principal: %+v", p)
		}
	}
	if n := agents.projects.Load(); n != 1 {
		t.Fatalf("%d project lookups for 3 cold agent tokens, want 1", n)
	}
	proj.IsActive = false
	if err := f.db.UpdateProject(t.Context(), proj); err != nil {
		t.Fatal(err)
	}
	a.InvalidateProject(proj.ID)
	sec, _ := issueAgentToken(t, f.db, f.clock.Now(), time.Hour)
	if _, err := a.Authenticate(t.Context(), sec); !errors.Is(err, auth.ErrProjectInactive) {
		t.Fatalf("after the project was deactivated and invalidated: %v, want ErrProjectInactive", err)
	}
	if n := agents.projects.Load(); n != 2 {
		t.Fatalf("%d project lookups, want 2 (the invalidation dropped the cached project)", n)
	}
}

func TestAgentTokenExpiryNamesTheDeviceFlow(t *testing.T) {
	f := newFixture(t, auth.Options{})
	proj := f.newProject(t)
	a := auth.New(f.st, f.cipher, auth.Options{Now: f.clock.Now, Agents: f.db, AgentProject: proj.ID})
	sec, tok := issueAgentToken(t, f.db, f.clock.Now(), time.Minute)
	f.clock.Advance(time.Minute)
	_, err := a.Authenticate(t.Context(), sec)
	var denied *auth.DeniedError
	if !errors.Is(err, auth.ErrAgentExpired) || !errors.Is(err, auth.ErrExpired) || !errors.As(err, &denied) || denied.TokenID != tok.ID {
		t.Fatalf("expired agent token: %v", err)
	}
	if want := "/auth/device/code"; !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(err.Error()) {
		t.Errorf("message %q does not name %s", err, want)
	}
}

func TestAgentTokenWithoutSSOOrProject(t *testing.T) {
	f := newFixture(t, auth.Options{})
	sec, _ := issueAgentToken(t, f.db, f.clock.Now(), time.Hour)
	off := auth.New(f.st, f.cipher, auth.Options{Now: f.clock.Now})
	if _, err := off.Authenticate(t.Context(), sec); !errors.Is(err, auth.ErrUnknownToken) {
		t.Errorf("SSO off: %v, want ErrUnknownToken", err)
	}
	missing := auth.New(f.st, f.cipher, auth.Options{Now: f.clock.Now, Agents: f.db, AgentProject: "not-created-yet"})
	if _, err := missing.Authenticate(t.Context(), sec); !errors.Is(err, auth.ErrNoAgentProject) {
		t.Errorf("missing project: %v, want ErrNoAgentProject", err)
	}
	// Created later, the project is found without a restart.
	proj := f.newProject(t)
	late := auth.New(f.st, f.cipher, auth.Options{Now: f.clock.Now, Agents: f.db, AgentProject: proj.Name})
	if _, err := late.Authenticate(t.Context(), sec); err != nil {
		t.Errorf("project created later: %v", err)
	}
	if _, err := late.Authenticate(t.Context(), "sk-agent-short"); !errors.Is(err, auth.ErrUnknownToken) {
		t.Errorf("malformed agent token: %v", err)
	}
}

// BenchmarkAuthenticateAgentHit is BenchmarkAuthenticateHit for an agent
// token: the same cache path, so within noise of it.
func BenchmarkAuthenticateAgentHit(b *testing.B) {
	f := newFixture(b, auth.Options{})
	proj := f.newProject(b)
	agents := &agentStore{Store: f.db}
	a := auth.New(f.st, f.cipher, auth.Options{TTL: time.Hour, Now: f.clock.Now, Agents: agents, AgentProject: proj.ID})
	sec, _ := issueAgentToken(b, f.db, f.clock.Now(), 2*time.Hour)
	ctx := context.Background()
	if _, err := a.Authenticate(ctx, sec); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Authenticate(ctx, sec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if n := agents.lookups.Load(); n != 1 {
		b.Fatalf("%d agent token lookups, want 1", n)
	}
}
