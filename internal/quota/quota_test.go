package quota_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/quota/quotatest"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	return teststore.SQLite(t)
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	return teststore.Postgres(t)
}

// tokenMaker returns the suite's Tokens, creating them in st under one
// project.
func tokenMaker(t *testing.T, st store.Store) quotatest.Tokens {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	p := &store.Project{
		ID:              uuid.NewString(),
		Name:            "quota-" + uuid.NewString(),
		Provider:        store.ProviderOpenAI,
		BaseURL:         "https://api.openai.com/v1",
		APIKeyEncrypted: []byte("ciphertext"),
		IsActive:        true,
		CreatedAt:       now,
		UpdatedAt:       now,
	}
	if err := st.CreateProject(context.Background(), p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	return quotatest.Tokens{
		New: func(t *testing.T, maxRequests, count int64) *store.Token {
			t.Helper()
			tok := memToken(maxRequests, count)
			tok.ProjectID = p.ID
			if err := st.CreateToken(context.Background(), tok); err != nil {
				t.Fatalf("CreateToken: %v", err)
			}
			return tok
		},
		SetMax: func(t *testing.T, tok *store.Token, maxRequests int64) {
			t.Helper()
			setMax(t, st, tok, &maxRequests)
		},
	}
}

// setMax writes tok's max_requests as PATCH does (nil: unlimited) and
// sets tok.MaxRequests to match, as the auth cache's next copy would.
func setMax(t *testing.T, st store.Store, tok *store.Token, maxRequests *int64) {
	t.Helper()
	cur, err := st.GetToken(context.Background(), tok.ID)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	cur.MaxRequests = maxRequests
	if err := st.UpdateToken(context.Background(), cur); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	tok.MaxRequests = maxRequests
}

// memToken returns a token that exists only in memory.
func memToken(maxRequests, count int64) *store.Token {
	id := uuid.NewString()
	now := time.Now().UTC().Truncate(time.Second)
	return &store.Token{
		ID:           id,
		Hash:         id,
		Prefix:       "wt_" + id[:4],
		ExpiresAt:    now.Add(time.Hour),
		MaxRequests:  &maxRequests,
		RequestCount: count,
		IsActive:     true,
		CreatedAt:    now,
	}
}

// storeToucher writes each touch to the store at once, so the database's
// request_count is never behind (a usage.Recorder flushes in batches).
type storeToucher struct {
	t  *testing.T
	st store.Store
}

func (s storeToucher) Touch(tokenID string, at time.Time) { s.write(tokenID, 1, at) }

func (s storeToucher) TouchLastUsed(tokenID string, at time.Time) { s.write(tokenID, 0, at) }

func (s storeToucher) write(tokenID string, requests int64, at time.Time) {
	err := s.st.TouchTokens(context.Background(), []store.TokenTouch{{TokenID: tokenID, Requests: requests, LastUsedAt: at}})
	if err != nil {
		s.t.Errorf("TouchTokens: %v", err)
	}
}

// countToucher counts touches per token: counted ones (Touch) and
// last-use-only ones (TouchLastUsed).
type countToucher struct {
	mu       sync.Mutex
	n, lastN map[string]int64
}

func (c *countToucher) Touch(tokenID string, _ time.Time) { c.add(&c.n, tokenID) }

func (c *countToucher) TouchLastUsed(tokenID string, _ time.Time) { c.add(&c.lastN, tokenID) }

func (c *countToucher) add(m *map[string]int64, tokenID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *m == nil {
		*m = make(map[string]int64)
	}
	(*m)[tokenID]++
}

// count returns the counted touches of tokenID.
func (c *countToucher) count(tokenID string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[tokenID]
}

// lastUsed returns the last-use-only touches of tokenID.
func (c *countToucher) lastUsed(tokenID string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastN[tokenID]
}

func TestDB(t *testing.T) {
	t.Parallel()
	stores := []struct {
		name string
		open func(*testing.T) store.Store
	}{
		{"sqlite", openSQLite},
		{"postgres", openPostgres},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			st := s.open(t)
			quotatest.Run(t, func(*testing.T) quota.Counter { return quota.NewDB(st, &countToucher{}) }, tokenMaker(t, st))
		})
	}
}

func TestDBCountsInTheDatabase(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 10, 2)
	c := quota.NewDB(st, &countToucher{})
	for range 3 {
		if err := c.Consume(context.Background(), tok); err != nil {
			t.Fatalf("Consume: %v", err)
		}
	}
	got, err := st.GetToken(context.Background(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.RequestCount != 5 || got.LastUsedAt == nil {
		t.Fatalf("request_count %d, last_used_at %v; want 5 and set", got.RequestCount, got.LastUsedAt)
	}
}

// newRedisCounter returns a counter on the test Redis whose database is a
// fresh SQLite store, Touched synchronously.
func newRedisCounter(t *testing.T, client redis.UniversalClient, prefix string, st store.Store) *quota.Redis {
	t.Helper()
	return quota.NewRedis(quota.RedisOptions{
		// Semantics, not latency, on a loaded test machine.
		Limiter: ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second}),
		Store:   st,
		Toucher: storeToucher{t: t, st: st},
	})
}

func TestRedis(t *testing.T) {
	t.Parallel()
	client, prefix := testenv.RedisClient(t)
	st := openSQLite(t)
	quotatest.Run(t,
		func(t *testing.T) quota.Counter { return newRedisCounter(t, client, prefix, st) },
		tokenMaker(t, st))
}

// TestRedisSharedAcrossReplicas checks exactness with two replicas, each
// with its own connection pool, consuming one token concurrently.
func TestRedisSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	a, prefix := testenv.RedisClient(t)
	b, _ := testenv.RedisClient(t)
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 50, 0)
	replicas := []*quota.Redis{newRedisCounter(t, a, prefix, st), newRedisCounter(t, b, prefix, st)}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range 16 {
		c := replicas[i%2]
		wg.Go(func() {
			for range 10 {
				if err := c.Consume(context.Background(), tok); err == nil {
					admitted.Add(1)
				} else if !errors.Is(err, store.ErrQuotaExceeded) {
					t.Errorf("Consume: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 50 {
		t.Fatalf("%d of 160 requests admitted across two replicas, want 50", got)
	}
	// Every admitted request reached the database.
	got, err := st.GetToken(context.Background(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.RequestCount != 50 {
		t.Fatalf("database request_count %d, want 50", got.RequestCount)
	}
}

// TestRedisReseedAfterKeyLoss checks the seeding path: the first use reads
// the database once, later uses do not, and a counter Redis lost is
// rebuilt from the database's request_count.
func TestRedisReseedAfterKeyLoss(t *testing.T) {
	t.Parallel()
	client, prefix := testenv.RedisClient(t)
	hook := &testenv.CommandCounter{}
	client.AddHook(hook)
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 10, 0)
	c := newRedisCounter(t, client, prefix, st)
	ctx := context.Background()
	// Open the connection first: its handshake is not the counter's.
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook.Reset()
	for range 4 {
		if err := c.Consume(ctx, tok); err != nil {
			t.Fatalf("Consume: %v", err)
		}
	}
	if n := c.Seeds(); n != 1 {
		t.Fatalf("%d seeds after 4 requests, want 1", n)
	}
	// Seeding cost a second round trip once; after it, one per request.
	if n := hook.Count(); n < 5 || n > 6 {
		t.Fatalf("%d Redis commands for 4 requests with one seed, want 5 (6 if the script was not cached)", n)
	}
	hook.Reset()
	if err := c.Consume(ctx, tok); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if n := hook.Count(); n != 1 {
		t.Fatalf("%d Redis commands for one request, want 1", n)
	}
	key := prefix + "rl:q:" + tok.ID
	if v, err := client.Get(ctx, key).Int64(); err != nil || v != 5 {
		t.Fatalf("counter = %d, %v; want 5", v, err)
	}
	if ttl := client.PTTL(ctx, key).Val(); ttl < time.Hour || ttl > 2*time.Hour+time.Minute {
		t.Fatalf("counter TTL %v, want the token's hour left plus an hour", ttl)
	}

	if err := client.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	admitted := 0
	for range 10 {
		if err := c.Consume(ctx, tok); err == nil {
			admitted++
		} else if !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("Consume: %v", err)
		}
	}
	if admitted != 5 {
		t.Fatalf("%d admitted after the counter was lost at 5 of 10, want 5", admitted)
	}
	if n := c.Seeds(); n != 2 {
		t.Fatalf("%d seeds, want 2 (first use and after the loss)", n)
	}
}

// TestRedisSeedsFromAFreshCopy checks a cold token's path: a copy read
// from the database moments ago (as authentication just did) seeds a
// missing counter in the decision's own script call, with no database read
// and no second round trip; an older copy is read again.
func TestRedisSeedsFromAFreshCopy(t *testing.T) {
	t.Parallel()
	client, prefix := testenv.RedisClient(t)
	hook := &testenv.CommandCounter{}
	client.AddHook(hook)
	st := openSQLite(t)
	c := newRedisCounter(t, client, prefix, st)
	ctx := context.Background()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := tokenMaker(t, st).New(t, 10, 0)
	fresh.RequestCount = 7 // the database's count when the copy was read
	fresh.LoadedAt = time.Now()
	hook.Reset()
	if err := c.Consume(ctx, fresh); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if n := c.Seeds(); n != 0 {
		t.Fatalf("%d database seeds for a fresh copy, want 0", n)
	}
	if n := hook.Count(); n < 1 || n > 2 {
		t.Fatalf("%d Redis commands for a cold token, want 1 (2 if the script was not cached)", n)
	}
	if v, err := client.Get(ctx, prefix+"rl:q:"+fresh.ID).Int64(); err != nil || v != 8 {
		t.Fatalf("counter = %d, %v; want the copy's 7 plus this request", v, err)
	}

	old := tokenMaker(t, st).New(t, 10, 0)
	old.LoadedAt = time.Now().Add(-quota.FreshCopy - time.Second)
	if err := c.Consume(ctx, old); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if n := c.Seeds(); n != 1 {
		t.Fatalf("%d database seeds for a copy older than FreshCopy, want 1", n)
	}
}

func TestRedisUnknownToken(t *testing.T) {
	t.Parallel()
	client, prefix := testenv.RedisClient(t)
	st := openSQLite(t)
	c := newRedisCounter(t, client, prefix, st)
	if err := c.Consume(context.Background(), memToken(5, 0)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Consume of a token missing from the database = %v, want ErrNotFound", err)
	}
}

// closedAddr returns a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestRedisUnreachable(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, failOpen := range []bool{true, false} {
		name := "fail closed"
		if failOpen {
			name = "fail open"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			client := redis.NewClient(&redis.Options{Addr: closedAddr(t), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = client.Close() })
			touches := &countToucher{}
			brk := breaker.New(breaker.Options{Failures: 3, Cooldown: time.Hour})
			c := quota.NewRedis(quota.RedisOptions{
				Limiter: ratelimit.NewRedis(client, ratelimit.RedisOptions{Timeout: timeout, FailOpen: failOpen, Breaker: brk}),
				Toucher: touches,
			})
			tok := memToken(1, 0)
			for i := range 6 {
				start := time.Now()
				err := c.Consume(context.Background(), tok)
				if took := time.Since(start); took > 4*timeout {
					t.Fatalf("Consume took %v with Timeout %v", took, timeout)
				}
				if failOpen && err != nil {
					t.Fatalf("fail open: Consume = %v, want admitted", err)
				}
				if !failOpen && !errors.Is(err, quota.ErrUnavailable) {
					t.Fatalf("fail closed: Consume = %v, want ErrUnavailable", err)
				}
				// The breaker opens after 3 failures: later calls do not wait.
				if wantOpen := i >= 2; brk.Open() != wantOpen {
					t.Fatalf("breaker open = %v after %d failures", brk.Open(), i+1)
				}
			}
			wantTouches := int64(0)
			if failOpen {
				wantTouches = 6
			}
			if got := touches.count(tok.ID); got != wantTouches {
				t.Fatalf("%d touches, want %d", got, wantTouches)
			}
		})
	}
}

// TestRedisConsumeWithLimits checks the one-round-trip admission: quota and
// rate limits in one command, all or nothing.
func TestRedisConsumeWithLimits(t *testing.T) {
	t.Parallel()
	client, prefix := testenv.RedisClient(t)
	hook := &testenv.CommandCounter{}
	client.AddHook(hook)
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 5, 0)
	c := newRedisCounter(t, client, prefix, st)
	ctx := context.Background()
	rate := ratelimit.Request{Key: "tok:" + tok.ID + ":rpm", Limit: 2, Cost: 1}
	if d, err := c.ConsumeWith(ctx, tok, rate); err != nil || !d.Allowed {
		t.Fatalf("first = %+v, %v", d, err) // seeds the counter
	}
	hook.Reset()
	if d, err := c.ConsumeWith(ctx, tok, rate); err != nil || !d.Allowed {
		t.Fatalf("second = %+v, %v", d, err)
	}
	if n := hook.Count(); n != 1 {
		t.Fatalf("%d Redis commands for quota + rate limit, want 1", n)
	}
	d, err := c.ConsumeWith(ctx, tok, rate)
	if err != nil || d.Allowed || d.Key != rate.Key {
		t.Fatalf("third (rate limit of 2) = %+v, %v; want refused by the rate limit", d, err)
	}
	// The refusal consumed none of the quota: 3 of 5 are left.
	admitted := 0
	for range 5 {
		if err := c.Consume(ctx, tok); err == nil {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("%d admitted after the rate refusal, want 3", admitted)
	}
}
