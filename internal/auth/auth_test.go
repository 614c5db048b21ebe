package auth_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/testclock"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// countingStore is the real store instrumented to count the lookups auth
// makes: token lookups, and any other query that would add a round trip.
// With delay set, each token lookup holds its result that long after the
// database answered (or until the caller's context ends), which widens the
// windows the concurrency tests need.
type countingStore struct {
	store.Store
	tokenLookups   atomic.Int64
	projectLookups atomic.Int64
	delay          atomic.Int64 // time.Duration
}

func (s *countingStore) GetTokenAndProjectByHash(ctx context.Context, hash string) (*store.Token, *store.Project, error) {
	s.tokenLookups.Add(1)
	t, p, err := s.Store.GetTokenAndProjectByHash(ctx, hash)
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	return t, p, err
}

func (s *countingStore) GetProject(ctx context.Context, id string) (*store.Project, error) {
	s.projectLookups.Add(1)
	return s.Store.GetProject(ctx, id)
}

type fixture struct {
	db     store.Store // the underlying SQLite store
	st     *countingStore
	cipher *secret.Cipher
	clock  *testclock.Clock
	auth   *auth.Authenticator
}

const upstreamKey = "sk-upstream-0123456789abcdef"

func openSQLite(t testing.TB) store.Store {
	t.Helper()
	return teststore.SQLite(t)
}

func newFixture(t testing.TB, opts auth.Options) *fixture {
	t.Helper()
	key := make([]byte, secret.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	c, err := secret.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	db := openSQLite(t)
	f := &fixture{
		db:     db,
		st:     &countingStore{Store: db},
		cipher: c,
		clock:  testclock.New(time.Now().UTC().Truncate(time.Second)),
	}
	opts.Now = f.clock.Now
	f.auth = auth.New(f.st, c, opts)
	return f
}

func (f *fixture) newProject(t testing.TB) *store.Project {
	t.Helper()
	enc, err := f.cipher.Encrypt([]byte(upstreamKey))
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	p := &store.Project{
		ID:              uuid.NewString(),
		Name:            "project-" + uuid.NewString(),
		Provider:        store.ProviderOpenAI,
		BaseURL:         "https://api.openai.com/v1",
		APIKeyEncrypted: enc,
		APIKeyHint:      secret.Mask(upstreamKey),
		IsActive:        true,
		CreatedAt:       now,
		UpdatedAt:       now,
	}
	if err := f.db.CreateProject(context.Background(), p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	return p
}

func (f *fixture) newToken(t testing.TB, projectID string, ttl time.Duration) (string, *store.Token) {
	t.Helper()
	sec, prefix, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	tok := &store.Token{
		ID:        uuid.NewString(),
		ProjectID: projectID,
		Hash:      hash,
		Prefix:    prefix,
		Label:     "test",
		ExpiresAt: now.Add(ttl),
		IsActive:  true,
		CreatedAt: now,
	}
	if err := f.db.CreateToken(context.Background(), tok); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return sec, tok
}

// lookups returns the store lookups made so far.
func (f *fixture) lookups() int64 { return f.st.tokenLookups.Load() }

func (f *fixture) mustAuth(t testing.TB, sec string) *auth.Principal {
	t.Helper()
	p, err := f.auth.Authenticate(context.Background(), sec)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return p
}

func (f *fixture) wantLookups(t testing.TB, want int64, when string) {
	t.Helper()
	if got := f.lookups(); got != want {
		t.Fatalf("%s: %d store lookups, want %d", when, got, want)
	}
}

func randomSecret(t testing.TB) string {
	t.Helper()
	s, _, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewToken(t *testing.T) {
	t.Parallel()
	format := regexp.MustCompile(`^sk-[A-Za-z0-9_-]{43}$`)
	hexHash := regexp.MustCompile(`^[0-9a-f]{64}$`)
	seen := make(map[string]bool)
	for range 1000 {
		sec, prefix, hash, err := auth.NewToken()
		if err != nil {
			t.Fatalf("NewToken: %v", err)
		}
		if !format.MatchString(sec) {
			t.Fatalf("secret %q does not match %s", sec, format)
		}
		if prefix != sec[:10] {
			t.Fatalf("prefix %q, want %q", prefix, sec[:10])
		}
		if !hexHash.MatchString(hash) || hash != auth.Hash(sec) {
			t.Fatalf("hash %q is not the hex SHA-256 of the secret", hash)
		}
		if seen[sec] {
			t.Fatalf("NewToken repeated a secret")
		}
		seen[sec] = true
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" // SHA-256("abc")
	if got := auth.Hash("abc"); got != want {
		t.Fatalf("Hash(abc) = %s, want %s", got, want)
	}
}

func TestAuthenticateOK(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{})
	proj := f.newProject(t)
	sec, tok := f.newToken(t, proj.ID, time.Hour)

	p := f.mustAuth(t, sec)
	if p.Token.ID != tok.ID || p.Token.Hash != tok.Hash || p.Project.ID != proj.ID || p.Project.Name != proj.Name {
		t.Fatalf("principal = token %s project %s, want %s %s", p.Token.ID, p.Project.ID, tok.ID, proj.ID)
	}
	if p.APIKey != upstreamKey {
		t.Fatalf("APIKey = %q, want the decrypted upstream key", p.APIKey)
	}
	if p.Project.APIKeyEncrypted != nil {
		t.Errorf("principal carries the encrypted key")
	}
	f.wantLookups(t, 1, "first call")
	if n := f.st.projectLookups.Load(); n != 0 {
		t.Fatalf("first call: %d project lookups besides the token's, want 0 (one round trip)", n)
	}

	again := f.mustAuth(t, sec)
	f.wantLookups(t, 1, "cache hit")
	if f.st.projectLookups.Load() != 0 {
		t.Fatalf("cache hit looked up the project")
	}
	if again != p {
		t.Errorf("cache hit returned a different snapshot")
	}
}

func TestAuthenticateMalformed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{})
	valid := randomSecret(t)
	cases := []string{
		"",
		"sk-",
		"Bearer " + valid,
		valid[:len(valid)-1],
		valid + "A",
		"pk-" + valid[3:],
		valid[:20] + "!" + valid[21:],
		valid[:20] + " " + valid[21:],
	}
	for _, sec := range cases {
		p, err := f.auth.Authenticate(context.Background(), sec)
		if !errors.Is(err, auth.ErrUnknownToken) || p != nil {
			t.Errorf("Authenticate(%q) = %v, %v; want ErrUnknownToken", sec, p, err)
		}
	}
	f.wantLookups(t, 0, "malformed secrets")
	if n := f.auth.Len(); n != 0 {
		t.Errorf("malformed secrets left %d cache entries", n)
	}
}

func TestAuthenticateUnknownIsNegativelyCached(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{NegativeTTL: 5 * time.Second})
	sec := randomSecret(t)
	for i, wantLookups := range []int64{1, 1} {
		if _, err := f.auth.Authenticate(context.Background(), sec); !errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("call %d: err = %v, want ErrUnknownToken", i, err)
		}
		f.wantLookups(t, wantLookups, fmt.Sprintf("call %d", i))
	}
	f.clock.Advance(5 * time.Second)
	if _, err := f.auth.Authenticate(context.Background(), sec); !errors.Is(err, auth.ErrUnknownToken) {
		t.Fatalf("after NegativeTTL: err = %v, want ErrUnknownToken", err)
	}
	f.wantLookups(t, 2, "after NegativeTTL")
}

func TestAuthenticateExpiredWhileCached(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{TTL: time.Hour})
	proj := f.newProject(t)
	sec, tok := f.newToken(t, proj.ID, time.Minute)

	f.mustAuth(t, sec)
	f.clock.Advance(time.Minute)
	p, err := f.auth.Authenticate(context.Background(), sec)
	if !errors.Is(err, auth.ErrExpired) || p != nil {
		t.Fatalf("at expires_at: %v, %v; want ErrExpired", p, err)
	}
	var denied *auth.DeniedError
	if !errors.As(err, &denied) || denied.TokenID != tok.ID || denied.ProjectID != proj.ID {
		t.Fatalf("error %#v does not carry the token and project IDs", err)
	}
	f.wantLookups(t, 1, "expiry of a cached token")
}

func TestAuthenticateExpiredOnLoad(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{})
	proj := f.newProject(t)
	sec, _ := f.newToken(t, proj.ID, -time.Second)
	if _, err := f.auth.Authenticate(context.Background(), sec); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
}

func TestRevokeTakesEffectOnInvalidate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, auth.Options{TTL: time.Hour})
	proj := f.newProject(t)
	sec, tok := f.newToken(t, proj.ID, time.Hour)
	other, _ := f.newToken(t, proj.ID, time.Hour)
	before := f.mustAuth(t, sec)
	f.mustAuth(t, other)

	deactivated := f.clock.Now()
	tok.IsActive = false
	tok.DeactivatedAt = &deactivated
	if err := f.db.UpdateToken(ctx, tok); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	f.mustAuth(t, sec) // still cached: only the invalidation makes it visible
	f.auth.InvalidateToken(tok.ID)

	if _, err := f.auth.Authenticate(ctx, sec); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("after InvalidateToken: err = %v, want ErrRevoked", err)
	}
	f.wantLookups(t, 3, "after InvalidateToken")
	if _, err := f.auth.Authenticate(ctx, sec); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("revoked, cached: err = %v, want ErrRevoked", err)
	}
	f.mustAuth(t, other)
	f.wantLookups(t, 3, "revoked token and sibling cached")
	if !before.Token.IsActive || before.Token.DeactivatedAt != nil {
		t.Errorf("a snapshot handed out earlier changed after the reload")
	}
}

func TestProjectDeactivationTakesEffectOnInvalidate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, auth.Options{TTL: time.Hour})
	proj := f.newProject(t)
	a, _ := f.newToken(t, proj.ID, time.Hour)
	b, _ := f.newToken(t, proj.ID, time.Hour)
	elsewhere, _ := f.newToken(t, f.newProject(t).ID, time.Hour)
	for _, sec := range []string{a, b, elsewhere} {
		f.mustAuth(t, sec)
	}

	proj.IsActive = false
	at := f.clock.Now()
	proj.DeactivatedAt = &at
	if err := f.db.UpdateProject(ctx, proj); err != nil {
		t.Fatalf("UpdateProject: %v", err)
	}
	f.auth.InvalidateProject(proj.ID)
	for _, sec := range []string{a, b} {
		p, err := f.auth.Authenticate(ctx, sec)
		if !errors.Is(err, auth.ErrProjectInactive) || p != nil {
			t.Fatalf("after InvalidateProject: %v, %v; want ErrProjectInactive", p, err)
		}
	}
	f.wantLookups(t, 5, "after InvalidateProject")
	f.mustAuth(t, elsewhere)
	f.wantLookups(t, 5, "token of another project")
}

func TestFlush(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{TTL: time.Hour})
	proj := f.newProject(t)
	sec, _ := f.newToken(t, proj.ID, time.Hour)
	unknown := randomSecret(t)
	f.mustAuth(t, sec)
	_, _ = f.auth.Authenticate(context.Background(), unknown)
	f.auth.Flush()
	if n := f.auth.Len(); n != 0 {
		t.Fatalf("Len after Flush = %d, want 0", n)
	}
	f.mustAuth(t, sec)
	_, _ = f.auth.Authenticate(context.Background(), unknown)
	f.wantLookups(t, 4, "after Flush")
}

func TestTTLExpiryReloads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, auth.Options{TTL: 5 * time.Second})
	proj := f.newProject(t)
	sec, tok := f.newToken(t, proj.ID, time.Hour)
	f.mustAuth(t, sec)

	tok.Label = "renamed"
	if err := f.db.UpdateToken(ctx, tok); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	f.clock.Advance(4 * time.Second)
	if p := f.mustAuth(t, sec); p.Token.Label != "test" {
		t.Fatalf("within TTL: label %q, want the cached %q", p.Token.Label, "test")
	}
	f.wantLookups(t, 1, "within TTL")
	f.clock.Advance(time.Second)
	if p := f.mustAuth(t, sec); p.Token.Label != "renamed" {
		t.Fatalf("after TTL: label %q, want %q", p.Token.Label, "renamed")
	}
	f.wantLookups(t, 2, "after TTL")
}

// The concurrency tests run in a synctest bubble: the store's delay is
// bubble time, and synctest.Wait tells when every goroutine, a waiter
// joining a lookup included, has got as far as it can.

func TestConcurrentMissesShareOneLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, auth.Options{})
		proj := f.newProject(t)
		sec, tok := f.newToken(t, proj.ID, time.Hour)
		f.st.delay.Store(int64(200 * time.Millisecond))

		const n = 50
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				p, err := f.auth.Authenticate(context.Background(), sec)
				if err != nil {
					t.Errorf("Authenticate: %v", err)
					return
				}
				if p.Token.ID != tok.ID || p.APIKey != upstreamKey {
					t.Errorf("wrong principal: token %s", p.Token.ID)
				}
			})
		}
		wg.Wait()
		f.wantLookups(t, 1, "50 concurrent first calls")
	})
}

func TestWaiterRetriesWhenLeaderGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, auth.Options{})
		proj := f.newProject(t)
		sec, _ := f.newToken(t, proj.ID, time.Hour)
		f.st.delay.Store(int64(300 * time.Millisecond))

		leaderCtx, cancel := context.WithCancel(context.Background())
		leaderErr := make(chan error, 1)
		go func() {
			_, err := f.auth.Authenticate(leaderCtx, sec)
			leaderErr <- err
		}()
		synctest.Wait() // the leader is in its lookup
		waiter := make(chan error, 1)
		go func() {
			_, err := f.auth.Authenticate(context.Background(), sec)
			waiter <- err
		}()
		synctest.Wait() // the waiter has joined it
		f.wantLookups(t, 1, "waiter joined the leader")
		cancel()
		if err := <-leaderErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("leader: err = %v, want context.Canceled", err)
		}
		if err := <-waiter; err != nil {
			t.Fatalf("waiter: %v (it must not inherit the leader's cancellation)", err)
		}
		f.wantLookups(t, 2, "leader cancelled, waiter retried")
	})
}

func TestInvalidationDuringLoadIsNotCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFixture(t, auth.Options{TTL: time.Hour})
		proj := f.newProject(t)
		sec, tok := f.newToken(t, proj.ID, time.Hour)
		f.st.delay.Store(int64(200 * time.Millisecond))

		done := make(chan error, 1)
		go func() {
			_, err := f.auth.Authenticate(ctx, sec)
			done <- err
		}()
		synctest.Wait() // the load has read the active token and holds it
		tok.IsActive = false
		if err := f.db.UpdateToken(ctx, tok); err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		f.auth.InvalidateToken(tok.ID)
		if err := <-done; err != nil {
			t.Fatalf("in-flight Authenticate: %v", err)
		}
		f.st.delay.Store(0)
		if _, err := f.auth.Authenticate(ctx, sec); !errors.Is(err, auth.ErrRevoked) {
			t.Fatalf("after the revocation: err = %v, want ErrRevoked (the pre-revocation load was cached)", err)
		}
	})
}

func TestEntriesAreBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{MaxEntries: 10, TTL: time.Hour, NegativeTTL: time.Hour})
	proj := f.newProject(t)
	sec, _ := f.newToken(t, proj.ID, time.Hour)
	f.mustAuth(t, sec)
	for i := range 200 {
		if _, err := f.auth.Authenticate(context.Background(), randomSecret(t)); !errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("spray %d: err = %v", i, err)
		}
		if n := f.auth.Len(); n > 10 {
			t.Fatalf("after %d random secrets the cache holds %d entries, want <= 10", i+1, n)
		}
	}
	before := f.lookups()
	f.mustAuth(t, sec)
	f.wantLookups(t, before, "real token after a spray of unknown secrets")
}

func TestStaleServingWhileStoreDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, auth.Options{TTL: 5 * time.Second, StaleTTL: 30 * time.Second})
	proj := f.newProject(t)
	sec, _ := f.newToken(t, proj.ID, time.Hour)
	revoked, revokedTok := f.newToken(t, proj.ID, time.Hour)
	loaded := f.mustAuth(t, sec)
	f.mustAuth(t, revoked)
	f.auth.InvalidateToken(revokedTok.ID) // dropped: must not be served stale

	if err := f.db.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	f.clock.Advance(6 * time.Second)
	if p := f.mustAuth(t, sec); p != loaded {
		t.Fatalf("store down after TTL: got a different principal, want the cached one")
	}
	f.wantLookups(t, 3, "first call after TTL with the store down")
	f.clock.Advance(time.Second)
	f.mustAuth(t, sec)
	f.wantLookups(t, 3, "stale entry within its retry interval")
	f.clock.Advance(5 * time.Second)
	f.mustAuth(t, sec)
	f.wantLookups(t, 4, "stale entry after its retry interval")

	for i := range 2 {
		_, err := f.auth.Authenticate(ctx, revoked)
		if err == nil || errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("invalidated token with the store down: err = %v, want a store error", err)
		}
		_, err = f.auth.Authenticate(ctx, randomSecret(t))
		if err == nil || errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("unknown secret with the store down (%d): err = %v, want a store error", i, err)
		}
	}
	unknown := randomSecret(t)
	for range 2 {
		_, _ = f.auth.Authenticate(ctx, unknown)
	}
	f.wantLookups(t, 10, "store errors are not cached")

	f.clock.Advance(30 * time.Second)
	_, err := f.auth.Authenticate(ctx, sec)
	if err == nil || errors.Is(err, auth.ErrUnknownToken) {
		t.Fatalf("beyond StaleTTL: err = %v, want a store error", err)
	}
}

func TestUndecryptableKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, auth.Options{})
	proj := f.newProject(t)
	sec, _ := f.newToken(t, proj.ID, time.Hour)
	other := newFixture(t, auth.Options{}) // same rows, different ENCRYPTION_KEY
	other.st.Store, other.db = f.db, f.db
	for range 2 {
		_, err := other.auth.Authenticate(context.Background(), sec)
		if !errors.Is(err, secret.ErrDecrypt) {
			t.Fatalf("err = %v, want secret.ErrDecrypt", err)
		}
	}
	if n := other.lookups(); n != 2 {
		t.Fatalf("%d lookups, want 2 (a decryption failure is not cached)", n)
	}
}

func BenchmarkAuthenticateHit(b *testing.B) {
	f := newFixture(b, auth.Options{TTL: time.Hour})
	proj := f.newProject(b)
	sec, _ := f.newToken(b, proj.ID, 2*time.Hour)
	f.mustAuth(b, sec)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.auth.Authenticate(ctx, sec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if n := f.lookups(); n != 1 {
		b.Fatalf("%d store lookups, want 1", n)
	}
}
