package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/auth"
)

func TestAuthenticateCached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, auth.Options{TTL: time.Minute, NegativeTTL: time.Minute})
	proj := f.newProject(t)
	sec, tok := f.newToken(t, proj.ID, time.Hour)
	unknown := randomSecret(t)

	wantUnknown := func(s, when string) {
		t.Helper()
		if p, err := f.auth.AuthenticateCached(ctx, s); !errors.Is(err, auth.ErrUnknownToken) || p != nil {
			t.Fatalf("%s: AuthenticateCached = (%v, %v), want ErrUnknownToken", when, p, err)
		}
	}
	wantServed := func(when string) {
		t.Helper()
		p, err := f.auth.AuthenticateCached(ctx, sec)
		if err != nil || p.Token.ID != tok.ID {
			t.Fatalf("%s: AuthenticateCached = (%v, %v), want token %s", when, p, err, tok.ID)
		}
	}

	wantUnknown("not-a-token", "malformed secret")
	wantUnknown(unknown, "unknown secret")
	wantUnknown(sec, "valid token never looked up")
	f.wantLookups(t, 0, "AuthenticateCached of secrets not in the cache")

	f.mustAuth(t, sec)
	if _, err := f.auth.Authenticate(ctx, unknown); !errors.Is(err, auth.ErrUnknownToken) {
		t.Fatalf("Authenticate(unknown) = %v, want ErrUnknownToken", err)
	}
	f.wantLookups(t, 2, "Authenticate of the token and of an unknown secret")
	wantServed("cached token")
	wantUnknown(unknown, "negatively cached secret")
	f.wantLookups(t, 2, "AuthenticateCached hits")

	f.clock.Advance(2 * time.Minute)
	wantServed("stale entry")
	f.wantLookups(t, 3, "a stale known token is reloaded")
	wantUnknown(unknown, "expired negative entry")
	f.wantLookups(t, 3, "an expired negative entry is not looked up again")

	f.auth.InvalidateToken(tok.ID)
	wantServed("after InvalidateToken")
	f.wantLookups(t, 4, "an invalidated known token is reloaded")
	f.auth.Flush()
	wantServed("after Flush")
	f.wantLookups(t, 5, "a flushed known token is reloaded")

	tok.IsActive = false
	if err := f.db.UpdateToken(ctx, tok); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	f.auth.InvalidateToken(tok.ID)
	if _, err := f.auth.AuthenticateCached(ctx, sec); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("revoked token: err = %v, want ErrRevoked", err)
	}
	f.wantLookups(t, 6, "revoked token reloaded")
}

// A token that stops existing is forgotten: AuthenticateCached no longer
// asks the store about it.
func TestAuthenticateCachedForgetsDeletedTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, auth.Options{TTL: time.Minute})
	proj := f.newProject(t)
	sec, tok := f.newToken(t, proj.ID, time.Hour)
	f.mustAuth(t, sec)

	n, err := f.db.DeleteTokensExpiredBefore(ctx, tok.ExpiresAt.Add(time.Second), 10)
	if err != nil || n != 1 {
		t.Fatalf("DeleteTokensExpiredBefore = (%d, %v), want the token deleted", n, err)
	}
	f.auth.InvalidateToken(tok.ID)
	if _, err := f.auth.AuthenticateCached(ctx, sec); !errors.Is(err, auth.ErrUnknownToken) {
		t.Fatalf("deleted token: err = %v, want ErrUnknownToken", err)
	}
	f.wantLookups(t, 2, "the deleted token was looked up once")
	f.clock.Advance(time.Hour) // past the negative entry
	if _, err := f.auth.AuthenticateCached(ctx, sec); !errors.Is(err, auth.ErrUnknownToken) {
		t.Fatalf("deleted token, later: err = %v, want ErrUnknownToken", err)
	}
	f.wantLookups(t, 2, "a deleted token is not looked up again")
}
