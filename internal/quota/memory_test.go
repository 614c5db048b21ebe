package quota_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/quota/quotatest"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// block is Memory's default block size, which these tests rely on (their
// quotas are below 64 blocks).
const block = 16

// newMemory returns a Memory counter on st, closed (and its Close checked)
// at cleanup, before st closes.
func newMemory(t *testing.T, st store.Store, toucher quota.LastUseToucher) *quota.Memory {
	t.Helper()
	m := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: toucher})
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// hookedStore counts ReserveRequests calls and runs hook, when set, before
// each: a non-nil error from it is returned instead of reserving.
type hookedStore struct {
	store.Store
	reserves atomic.Int64
	hook     func(call int64) error
}

func (h *hookedStore) ReserveRequests(ctx context.Context, tokenID string, n int64) (int64, int64, error) {
	call := h.reserves.Add(1)
	if h.hook != nil {
		if err := h.hook(call); err != nil {
			return 0, 0, err
		}
	}
	return h.Store.ReserveRequests(ctx, tokenID, n)
}

// requestCount reads the token's durable request_count.
func requestCount(t *testing.T, st store.Store, id string) int64 {
	t.Helper()
	tok, err := st.GetToken(context.Background(), id)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	return tok.RequestCount
}

// consumeN makes n sequential Consume calls and returns how many were
// admitted; every refusal must be ErrQuotaExceeded.
func consumeN(t *testing.T, c quota.Counter, tok *store.Token, n int) int64 {
	t.Helper()
	var admitted int64
	for range n {
		switch err := c.Consume(context.Background(), tok); {
		case err == nil:
			admitted++
		case !errors.Is(err, store.ErrQuotaExceeded):
			t.Fatalf("Consume: %v, want nil or ErrQuotaExceeded", err)
		}
	}
	return admitted
}

// openSQLiteAt migrates and opens the SQLite file at path; the caller
// closes it.
func openSQLiteAt(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	teststore.Migrate(t, schema.DriverSQLite, path)
	db, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	return db
}

func TestMemory(t *testing.T) {
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
			quotatest.Run(t, func(t *testing.T) quota.Counter { return newMemory(t, st, &countToucher{}) }, tokenMaker(t, st))
		})
	}
}

// TestMemoryDurableCountNeverLags checks after every admitted request that
// the database's request_count covers it, and that the database is
// written once per block, the last block being only what remained.
func TestMemoryDurableCountNeverLags(t *testing.T) {
	t.Parallel()
	st := &hookedStore{Store: openSQLite(t)}
	tok := tokenMaker(t, st).New(t, 50, 0)
	m := newMemory(t, st, &countToucher{})
	for served := int64(1); served <= 50; served++ {
		if err := m.Consume(context.Background(), tok); err != nil {
			t.Fatalf("Consume #%d: %v", served, err)
		}
		if got := requestCount(t, st, tok.ID); got < served || got >= served+block {
			t.Fatalf("request_count %d after %d served, want at least %d and less than a block more", got, served, served)
		}
	}
	if err := m.Consume(context.Background(), tok); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("Consume on a used-up quota = %v, want ErrQuotaExceeded", err)
	}
	if n := st.reserves.Load(); n != 4 {
		t.Fatalf("%d reservations for 50 requests, want 4 (16+16+16+2)", n)
	}
	if got := requestCount(t, st, tok.ID); got != 50 {
		t.Fatalf("request_count %d with the quota of 50 used up, want 50", got)
	}
}

// TestMemoryBlockScalesWithQuota checks the block a first request
// reserves: Block, or 1/64 of a large quota up to 1024.
func TestMemoryBlockScalesWithQuota(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	tokens := tokenMaker(t, st)
	for _, tc := range []struct {
		block, maxRequests, want int64
	}{
		{0, 100, 16},
		{0, 6400, 100},
		{0, 1 << 20, 1024},
		{4, 100, 4},
		{2000, 1 << 20, 2000},
	} {
		tok := tokens.New(t, tc.maxRequests, 0)
		m := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: &countToucher{}, Block: tc.block})
		if err := m.Consume(context.Background(), tok); err != nil {
			t.Fatalf("Consume: %v", err)
		}
		if got := requestCount(t, st, tok.ID); got != tc.want {
			t.Errorf("Block %d, max_requests %d: first reservation %d, want %d", tc.block, tc.maxRequests, got, tc.want)
		}
		if err := m.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// TestMemoryCloseGivesBackUnserved checks the graceful path: request_count
// is exactly what was served, and requests after Close stay exact.
func TestMemoryCloseGivesBackUnserved(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 100, 0)
	m := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: &countToucher{}})
	if got := consumeN(t, m, tok, 37); got != 37 {
		t.Fatalf("%d of 37 admitted", got)
	}
	if got := requestCount(t, st, tok.ID); got != 48 {
		t.Fatalf("request_count %d after 37 served, want 48 (three blocks reserved)", got)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := requestCount(t, st, tok.ID); got != 37 {
		t.Fatalf("request_count %d after Close, want the 37 served", got)
	}
	// A request still in flight at shutdown is counted in the database.
	if got := consumeN(t, m, tok, 80); got != 63 {
		t.Fatalf("%d admitted after Close with 63 left, want 63", got)
	}
	if got := requestCount(t, st, tok.ID); got != 100 {
		t.Fatalf("request_count %d, want 100", got)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := requestCount(t, st, tok.ID); got != 100 {
		t.Fatalf("request_count %d after a second Close, want 100", got)
	}
}

// TestMemoryCrashServesFewerNeverMore abandons a counter without Close, as
// kill -9 does, and serves the rest of the quota from a fresh counter on
// the reopened file: together they never serve more than max_requests.
// TestMemorySurvivesSIGKILL does the same with a real process.
func TestMemoryCrashServesFewerNeverMore(t *testing.T) {
	t.Parallel()
	const maxRequests = 100
	path := testenv.SQLitePath(t)
	st := openSQLiteAt(t, path)
	tok := tokenMaker(t, st).New(t, maxRequests, 0)
	first := consumeN(t, quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: &countToucher{}}), tok, 37)
	// The crash: no Close; the store goes as the process would.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openSQLiteAt(t, path)
	t.Cleanup(func() { _ = st.Close() })
	durable := requestCount(t, st, tok.ID)
	if durable < first || durable >= first+block {
		t.Fatalf("request_count %d after %d served and a crash, want at least %d and less than a block more", durable, first, first)
	}
	second := consumeN(t, newMemory(t, st, &countToucher{}), tok, 2*maxRequests)
	if first+second > maxRequests {
		t.Fatalf("%d + %d served across a crash, more than max_requests %d", first, second, maxRequests)
	}
	if second != maxRequests-durable {
		t.Fatalf("%d served after the crash, want the %d the durable count left", second, maxRequests-durable)
	}
}

// TestMemoryConcurrent admits exactly max_requests from many goroutines,
// with one database write per block.
func TestMemoryConcurrent(t *testing.T) {
	t.Parallel()
	const (
		maxRequests = 1000
		workers     = 64
	)
	st := &hookedStore{Store: openSQLite(t)}
	tok := tokenMaker(t, st).New(t, maxRequests, 0)
	m := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: &countToucher{}})
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				err := m.Consume(context.Background(), tok)
				if err != nil {
					if !errors.Is(err, store.ErrQuotaExceeded) {
						t.Errorf("Consume: %v", err)
					}
					return
				}
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != maxRequests {
		t.Fatalf("%d admitted by %d goroutines, want exactly %d", got, workers, maxRequests)
	}
	if n := st.reserves.Load(); n != (maxRequests+block-1)/block {
		t.Fatalf("%d reservations, want %d (one per block)", n, (maxRequests+block-1)/block)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := requestCount(t, st, tok.ID); got != maxRequests {
		t.Fatalf("request_count %d after Close, want %d", got, maxRequests)
	}
}

// TestMemoryLoweredMidBlock lowers max_requests while a block is held:
// the block is not served beyond the new quota, and Close gives back the
// surplus.
func TestMemoryLoweredMidBlock(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 100, 0)
	m := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: &countToucher{}})
	if got := consumeN(t, m, tok, 5); got != 5 {
		t.Fatalf("%d of 5 admitted", got)
	}
	setMax(t, st, tok, ptr[int64](8))
	if got := consumeN(t, m, tok, 20); got != 3 {
		t.Fatalf("%d admitted after max_requests went from 100 to 8 at 5 served, want 3", got)
	}
	if got := requestCount(t, st, tok.ID); got != block {
		t.Fatalf("request_count %d, want the block of %d still reserved", got, block)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := requestCount(t, st, tok.ID); got != 8 {
		t.Fatalf("request_count %d after Close, want the 8 served", got)
	}
}

// TestMemoryQuotaSetAgain removes a token's quota while a block is held and
// sets one again: the requests served meanwhile (counted by the Toucher)
// count against it, though the block was reserved before them.
func TestMemoryQuotaSetAgain(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	tok := tokenMaker(t, st).New(t, 100, 0)
	m := newMemory(t, st, storeToucher{t: t, st: st})
	if got := consumeN(t, m, tok, 5); got != 5 {
		t.Fatalf("%d of 5 admitted", got)
	}
	setMax(t, st, tok, nil)
	if got := consumeN(t, m, tok, 30); got != 30 {
		t.Fatalf("%d of 30 admitted without a quota", got)
	}
	// 35 served, 11 of the first block unserved.
	setMax(t, st, tok, ptr[int64](40))
	if got := consumeN(t, m, tok, 20); got != 5 {
		t.Fatalf("%d admitted on a quota of 40 with 35 served, want 5", got)
	}
}

// TestMemoryOneReservationInFlight holds a token's first reservation and
// checks that other requests for the token wait for it rather than
// reserving too, that a waiting request honours its context, and that the
// block then serves them all.
func TestMemoryOneReservationInFlight(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	st := &hookedStore{Store: openSQLite(t)}
	st.hook = func(call int64) error {
		if call == 1 {
			close(entered)
			<-release
			return nil
		}
		select {
		case <-release:
		default:
			t.Errorf("reservation #%d began while the first was in flight", call)
		}
		return nil
	}
	tok := tokenMaker(t, st).New(t, 100, 0)
	m := newMemory(t, st, &countToucher{})
	// On failure, let the held reservation end before Close waits for it.
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	const waiters = 8
	errs := make(chan error, waiters+1)
	go func() { errs <- m.Consume(context.Background(), tok) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Consume(ctx, tok); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume with a cancelled context while the block is reserved = %v, want context.Canceled", err)
	}
	for range waiters {
		go func() { errs <- m.Consume(context.Background(), tok) }()
	}
	unblock()
	for range waiters + 1 {
		if err := <-errs; err != nil {
			t.Errorf("Consume: %v", err)
		}
	}
	if n := st.reserves.Load(); n != 1 {
		t.Fatalf("%d reservations for %d requests, want 1", n, waiters+1)
	}
}

func TestMemoryStoreErrors(t *testing.T) {
	t.Parallel()
	st := &hookedStore{Store: openSQLite(t), hook: func(int64) error { return errors.New("disk I/O error") }}
	m := newMemory(t, st, &countToucher{})
	tok := tokenMaker(t, st).New(t, 10, 0)
	if err := m.Consume(context.Background(), tok); !errors.Is(err, quota.ErrUnavailable) {
		t.Fatalf("Consume when the reservation fails = %v, want ErrUnavailable", err)
	}
	st.hook = nil
	if err := m.Consume(context.Background(), tok); err != nil {
		t.Fatalf("Consume once the database answers: %v", err)
	}
	if err := m.Consume(context.Background(), memToken(10, 0)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Consume of a token missing from the database = %v, want ErrNotFound", err)
	}
}

// TestMemoryTouches checks what the Toucher is told: requests of a token
// without a quota are counted, those of a quota token only move
// last_used_at (their count is reserved in the database).
func TestMemoryTouches(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	touches := &countToucher{}
	m := newMemory(t, st, touches)
	tokens := tokenMaker(t, st)
	limited, unlimited := tokens.New(t, 3, 0), tokens.New(t, 0, 0)
	unlimited.MaxRequests = nil
	for range 5 {
		_ = m.Consume(context.Background(), limited)
		if err := m.Consume(context.Background(), unlimited); err != nil {
			t.Fatalf("Consume without a quota: %v", err)
		}
	}
	if n, last := touches.count(limited.ID), touches.lastUsed(limited.ID); n != 0 || last != 3 {
		t.Fatalf("quota token: %d counted and %d last-use touches for 3 admitted requests, want 0 and 3", n, last)
	}
	if n, last := touches.count(unlimited.ID), touches.lastUsed(unlimited.ID); n != 5 || last != 0 {
		t.Fatalf("token without a quota: %d counted and %d last-use touches for 5 requests, want 5 and 0", n, last)
	}
}

// TestMemoryForgetsExpiredTokens keeps a process that sees many short-lived
// tokens at bounded memory. The tokens are not in the database: the
// counters are made before the reservation fails.
func TestMemoryForgetsExpiredTokens(t *testing.T) {
	t.Parallel()
	m := newMemory(t, openSQLite(t), &countToucher{})
	ctx := context.Background()
	for i := range 3000 {
		tok := memToken(10, 0)
		if i < 2000 {
			tok.ExpiresAt = time.Now().Add(-time.Second) // already expired: its counter is garbage
		}
		if err := m.Consume(ctx, tok); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Consume = %v, want ErrNotFound", err)
		}
	}
	// Sweeps ran at the 1024th, 2048th new counter: the 2000 expired ones
	// are gone, the live ones (and those added after the last sweep) stay.
	if n := m.Len(); n >= 2000 || n < 1000 {
		t.Fatalf("%d counters held after 3000 tokens of which 2000 expired, want the live 1000 plus at most one sweep interval", n)
	}
}

func ptr[T any](v T) *T { return &v }
