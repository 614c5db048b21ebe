package auth

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testclock"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// auditLog collects the rows a limiter audits.
type auditLog struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *auditLog) Audit(e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

// of returns the rows of client ip ("" for the other-clients row).
func (a *auditLog) of(ip string) []store.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []store.AuditEvent
	for _, e := range a.events {
		if e.ClientIP == ip {
			out = append(out, e)
		}
	}
	return out
}

func (a *auditLog) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.events)
}

// windowAt is the start of the window every clock-driven test starts in.
var windowAt = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newClock returns a clock 20 seconds into the window at windowAt.
func newClock() *testclock.Clock { return testclock.New(windowAt.Add(20 * time.Second)) }

// start calls run in a goroutine that lives until the returned stop is
// called (or the test ends); stop returns run's error.
func start(t *testing.T, run func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func fail(l *FailureLimiter, ip string, n int) {
	for i := range n {
		l.Fail(context.Background(), Failure{IP: ip, Method: "POST", Path: "/v1/chat/completions",
			Reason: "invalid token", RequestID: fmt.Sprintf("req-%s-%d", ip, i)})
	}
}

func wantBlocked(t *testing.T, l *FailureLimiter, ip string, retryAfter time.Duration) {
	t.Helper()
	got, blocked := l.Blocked(ip)
	if !blocked || got != retryAfter {
		t.Fatalf("Blocked(%s) = (%v, %t), want (%v, true)", ip, got, blocked, retryAfter)
	}
}

func wantNotBlocked(t *testing.T, l *FailureLimiter, ip string) {
	t.Helper()
	if got, blocked := l.Blocked(ip); blocked {
		t.Fatalf("Blocked(%s) = (%v, true), want not blocked", ip, got)
	}
}

func activeBlocks(t *testing.T, st BlockStore, now time.Time) []store.AuthBlock {
	t.Helper()
	got, err := st.ActiveAuthBlocks(context.Background(), now, 100)
	if err != nil {
		t.Fatalf("ActiveAuthBlocks: %v", err)
	}
	return got
}

func TestFailureLimitBlocksUntilWindowEnd(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l := NewFailureLimiter(teststore.SQLite(t), &auditLog{}, FailureOptions{Limit: 5, Now: clk.Now})
	const ip, other = "192.0.2.1", "192.0.2.2"

	fail(l, ip, 4)
	wantNotBlocked(t, l, ip)
	fail(l, ip, 1)
	wantBlocked(t, l, ip, 40*time.Second)
	wantNotBlocked(t, l, other)
	if got := l.Stats().PendingBlocks; got != 1 {
		t.Fatalf("pending blocks = %d, want 1", got)
	}
	fail(l, ip, 10)
	if got := l.Stats().PendingBlocks; got != 1 {
		t.Fatalf("pending blocks after more failures = %d, want still 1 (one write per block)", got)
	}

	clk.Advance(39 * time.Second)
	wantBlocked(t, l, ip, time.Second)
	clk.Advance(time.Second)
	wantNotBlocked(t, l, ip)

	// The new window counts from zero.
	fail(l, ip, 4)
	wantNotBlocked(t, l, ip)
	fail(l, ip, 1)
	wantBlocked(t, l, ip, time.Minute)
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct{ ip, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:0:0:1::1", "2001:db8::/64"},
		{"2001:db8::ffff%eth0", "2001:db8::/64"},
		{"2001:db8:0:1::1", "2001:db8:0:1::/64"},
		{"not an ip\x00\xff", "not an ip\ufffd\ufffd"},
		{strings.Repeat("x", 1000), strings.Repeat("x", maxClientLen)},
	}
	for _, tc := range tests {
		if got := ClientKey(tc.ip); got != tc.want {
			t.Errorf("ClientKey(%q) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}

// Addresses of one IPv6 /64 count together.
func TestFailureLimitIPv6Prefix(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l := NewFailureLimiter(teststore.SQLite(t), &auditLog{}, FailureOptions{Limit: 5, Now: clk.Now})
	fail(l, "2001:db8::1", 3)
	fail(l, "2001:db8::2", 2)
	wantBlocked(t, l, "2001:db8::abcd", 40*time.Second)
	wantNotBlocked(t, l, "2001:db8:0:1::1")
}

// Two replicas sharing Redis see one count per client; the replica whose
// failure reached the limit writes the block.
func TestFailureLimitRedisSharedCount(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.RedisClient(t)
	clk := newClock()
	stA, stB := teststore.SQLite(t), teststore.SQLite(t)
	// The default 50 ms call budget falls back to counting in process on a
	// loaded machine; this test is about the shared count, not the budget.
	opts := FailureOptions{Limit: 5, Redis: rdb, KeyPrefix: prefix, Now: clk.Now, RedisTimeout: 5 * time.Second}
	a := NewFailureLimiter(stA, &auditLog{}, opts)
	b := NewFailureLimiter(stB, &auditLog{}, opts)
	stopA, stopB := start(t, a.Run), start(t, b.Run)
	const ip = "198.51.100.1"

	fail(a, ip, 3)
	fail(b, ip, 1)
	wantNotBlocked(t, a, ip)
	wantNotBlocked(t, b, ip)
	fail(b, ip, 1) // the fifth, cluster-wide
	wantBlocked(t, b, ip, 40*time.Second)
	wantNotBlocked(t, a, ip) // a has not heard of it yet
	fail(a, ip, 1)
	wantBlocked(t, a, ip, 40*time.Second)

	key := prefix + ip + ":" + fmt.Sprint(windowOf(clk.Now()))
	n, err := rdb.Get(t.Context(), key).Int64()
	if err != nil || n != 6 {
		t.Fatalf("redis count = (%d, %v), want 6", n, err)
	}
	if ttl := rdb.TTL(t.Context(), key).Val(); ttl <= 0 || ttl > 2*failureWindow {
		t.Errorf("redis count TTL = %v, want within two windows", ttl)
	}

	if err := stopA(); err != nil {
		t.Fatalf("a.Run: %v", err)
	}
	if err := stopB(); err != nil {
		t.Fatalf("b.Run: %v", err)
	}
	if got := activeBlocks(t, stA, clk.Now()); len(got) != 0 {
		t.Errorf("replica a wrote %v; only the replica that reached the limit writes", got)
	}
	want := []store.AuthBlock{{Identifier: ip, FailedAttempts: 5, LastAttemptAt: clk.Now(),
		BlockedUntil: windowAt.Add(time.Minute)}}
	if d := cmp.Diff(want, activeBlocks(t, stB, clk.Now())); d != "" {
		t.Errorf("blocks written by replica b (-want +got):\n%s", d)
	}
}

// Without Redis, a block written by one instance reaches another instance
// (or a restarted one) through the store.
func TestFailureBlockSeenThroughStore(t *testing.T) {
	t.Parallel()
	backends := []struct {
		name string
		// open returns the store of the first instance and a function that
		// opens the second one's on the same database.
		open func(t *testing.T) (store.Store, func() store.Store)
	}{
		{"SQLite restart", func(t *testing.T) (store.Store, func() store.Store) {
			first := teststore.SQLite(t)
			path := first.SchemaDSN()
			return first, func() store.Store {
				_ = first.Close() // the file is one process's at a time
				db, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
				if err != nil {
					t.Fatalf("reopen sqlite: %v", err)
				}
				t.Cleanup(func() { _ = db.Close() })
				return db
			}
		}},
		{"Postgres replicas", func(t *testing.T) (store.Store, func() store.Store) {
			url := teststore.PostgresURL(t)
			open := func() store.Store {
				db, err := postgres.Open(t.Context(), postgres.Options{URL: url, PoolSize: 2})
				if err != nil {
					t.Fatalf("postgres.Open: %v", err)
				}
				t.Cleanup(func() { _ = db.Close() })
				return db
			}
			return open(), open
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			clk := newClock()
			stA, openB := be.open(t)
			a := NewFailureLimiter(stA, &auditLog{}, FailureOptions{Limit: 3, Now: clk.Now})
			stop := start(t, a.Run)
			const ip = "203.0.113.7"
			fail(a, ip, 3)
			wantBlocked(t, a, ip, 40*time.Second)
			if err := stop(); err != nil { // the final flush writes the block
				t.Fatalf("Run: %v", err)
			}

			clk.Advance(10 * time.Second)
			b := NewFailureLimiter(openB(), &auditLog{}, FailureOptions{Limit: 3, Now: clk.Now})
			wantNotBlocked(t, b, ip)
			b.loadBlocks(t.Context())
			wantBlocked(t, b, ip, 30*time.Second)
			wantNotBlocked(t, b, "203.0.113.8")
			clk.Advance(30 * time.Second)
			wantNotBlocked(t, b, ip)
		})
	}
}

// 1,000 failures of one client in a window make two rows in the database:
// the first failure at once, a summary of the 999 others when the window
// ends. Audited strings are bounded and storable.
func TestFailureAuditSummary(t *testing.T) {
	t.Parallel()
	for _, be := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"SQLite", func(t *testing.T) store.Store { return teststore.SQLite(t) }},
		{"Postgres", func(t *testing.T) store.Store { return teststore.Postgres(t) }},
	} {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t)
			rec := usage.New(st, usage.Options{})
			stopRec := start(t, rec.Run)

			clk := newClock()
			l := NewFailureLimiter(st, rec, FailureOptions{Limit: 20, Now: clk.Now})
			const ip = "192.0.2.50"
			hostilePath := "/v1/\x1b[2J\u202e\xff" + strings.Repeat("a", 1<<20)
			hostileReason := "bad\r\nforged: line" + strings.Repeat("é", 500)
			for i := range 1000 {
				l.Fail(context.Background(), Failure{IP: ip, Method: "POST", Path: hostilePath,
					Reason: hostileReason, RequestID: fmt.Sprintf("req-%d", i)})
				if i%100 == 0 {
					clk.Advance(time.Second)
				}
			}
			if err := start(t, l.Run)(); err != nil { // the final flush
				t.Fatalf("Run: %v", err)
			}
			if err := stopRec(); err != nil {
				t.Fatalf("recorder: %v", err)
			}

			events, _, err := st.ListAuditEvents(context.Background(), store.AuditFilter{Action: auditAction,
				Page: store.Page{Page: 1, PageSize: 100}})
			if err != nil {
				t.Fatalf("ListAuditEvents: %v", err)
			}
			if len(events) != 2 {
				t.Fatalf("%d audit rows, want 2: %+v", len(events), events)
			}
			first, summary := events[1], events[0] // newest first
			if first.RequestID != "req-0" || first.Metadata["count"] != float64(1) || first.Metadata["summary"] != nil {
				t.Errorf("first row: request %q, metadata %v; want req-0, count 1", first.RequestID, first.Metadata)
			}
			wantMeta := map[string]any{"count": float64(999), "summary": true, "blocked": true,
				"window_start": "2025-06-01T12:00:00Z", "window_end": "2025-06-01T12:01:00Z"}
			if d := cmp.Diff(wantMeta, summary.Metadata); d != "" {
				t.Errorf("summary metadata (-want +got):\n%s", d)
			}
			if summary.RequestID != "" {
				t.Errorf("summary row request ID %q, want none", summary.RequestID)
			}
			for _, e := range events {
				if e.ClientIP != ip || e.Outcome != store.OutcomeDenied {
					t.Errorf("row client %q outcome %q, want %q denied", e.ClientIP, e.Outcome, ip)
				}
				for _, f := range []struct {
					name, v string
					max     int
				}{{"path", e.Path, MaxAuditPath}, {"reason", e.Reason, MaxAuditReason}} {
					if len(f.v) > f.max || len(f.v) < f.max-3 || !utf8.ValidString(f.v) ||
						strings.ContainsAny(f.v, "\x1b\r\n\u202e") {
						t.Errorf("%s %q (%d bytes): want valid UTF-8 of at most %d bytes, no control characters",
							f.name, f.v[:min(len(f.v), 40)], len(f.v), f.max)
					}
				}
			}
		})
	}
}

// Past MaxAudited clients in a window, new clients share one summary row.
func TestFailureAuditOtherClients(t *testing.T) {
	t.Parallel()
	clk := newClock()
	log := &auditLog{}
	l := NewFailureLimiter(teststore.SQLite(t), log, FailureOptions{MaxAudited: 3, Now: clk.Now})
	for i := range 10 {
		fail(l, fmt.Sprintf("192.0.2.%d", i), 2)
	}
	if n := log.len(); n != 3 {
		t.Fatalf("%d rows during the window, want 3 (the first failure of the first 3 clients)", n)
	}
	clk.Advance(time.Minute)
	fail(l, "198.51.100.1", 1) // the next window's first failure ends this one

	for i := range 3 {
		ip := fmt.Sprintf("192.0.2.%d", i)
		rows := log.of(ip)
		if len(rows) != 2 || rows[0].Metadata["count"] != int64(1) || rows[1].Metadata["count"] != int64(1) {
			t.Errorf("rows of %s = %+v, want the first failure and a summary of 1", ip, rows)
		}
	}
	other := log.of("")
	if len(other) != 1 {
		t.Fatalf("other-clients rows = %+v, want one", other)
	}
	if m := other[0].Metadata; m["count"] != int64(14) || m["other_clients"] != true || m["summary"] != true {
		t.Errorf("other-clients metadata = %v, want count 14", m)
	}
	if other[0].Path != "/v1/chat/completions" {
		t.Errorf("other-clients path = %q, want the first such failure's", other[0].Path)
	}
	if n := log.len(); n != 3+3+1+1 {
		t.Errorf("%d rows in all, want 8", n)
	}
}

// Spraying addresses keeps the in-process state within its bounds, and a
// client close to the limit is not pushed out by the spray.
func TestFailureSprayIsBounded(t *testing.T) {
	t.Parallel()
	clk := newClock()
	log := &auditLog{}
	l := NewFailureLimiter(teststore.SQLite(t), log, FailureOptions{Limit: 5, Now: clk.Now})
	const hitter = "198.51.100.200"
	fail(l, hitter, 4)
	for i := range 200_000 {
		l.Fail(context.Background(), Failure{IP: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff)})
	}
	s := l.Stats()
	if s.Tracked > DefaultMaxTracked || s.Tracked < DefaultMaxTracked-1 {
		t.Errorf("tracked clients = %d, want at most (and about) %d", s.Tracked, DefaultMaxTracked)
	}
	if s.Audited != DefaultMaxAudited || log.len() != DefaultMaxAudited {
		t.Errorf("audited clients = %d, rows = %d, want %d", s.Audited, log.len(), DefaultMaxAudited)
	}
	fail(l, hitter, 1)
	wantBlocked(t, l, hitter, 40*time.Second)

	// Blocks and the blocks waiting for the store are bounded too.
	b := NewFailureLimiter(teststore.SQLite(t), log, FailureOptions{Limit: 1, MaxTracked: 1000, Now: clk.Now})
	spray := func() {
		for i := range 5000 {
			b.Fail(context.Background(), Failure{IP: fmt.Sprintf("10.0.%d.%d", i>>8, i&0xff)})
		}
	}
	spray()
	if s := b.Stats(); s.Blocked != 1000 || s.PendingBlocks != 1000 || s.Tracked != 1000 {
		t.Errorf("stats after blocking 5000 clients = %+v, want 1000 of each", s)
	}
	// Without Run, nothing writes or prunes: the same clients blocked again
	// in the next window do not pile up more writes.
	clk.Advance(time.Minute)
	spray()
	if s := b.Stats(); s.Blocked != 1000 || s.PendingBlocks != 1000 {
		t.Errorf("stats after a second window = %+v, want 1000 blocks and pending writes", s)
	}
}

// With Redis away, failures are counted in process and blocks still hold;
// the breaker given stops the calls.
func TestFailureLimitRedisDown(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: every call fails at once.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	clk := newClock()
	st := teststore.SQLite(t)
	brk := breaker.New(breaker.Options{Failures: 3})
	l := NewFailureLimiter(st, &auditLog{}, FailureOptions{Limit: 5, Redis: rdb, Breaker: brk, Now: clk.Now})
	stop := start(t, l.Run)
	const ip = "192.0.2.9"
	fail(l, ip, 4)
	wantNotBlocked(t, l, ip)
	if !brk.Open() {
		t.Error("breaker closed after 4 failed Redis calls, want open")
	}
	fail(l, ip, 1)
	wantBlocked(t, l, ip, 40*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := activeBlocks(t, st, clk.Now()); len(got) != 1 || got[0].Identifier != ip {
		t.Errorf("blocks written = %v, want the block of %s", got, ip)
	}
}

// Run loads blocks when it starts and every RefreshInterval, writes new
// blocks, emits summaries when a window ends and once more when it stops.
func TestFailureRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := teststore.SQLite(t)
		start := time.Now() // the bubble's clock: a window starts here
		ctx := t.Context()
		const earlier, later, ip, once, last = "198.51.100.9", "198.51.100.10", "192.0.2.1", "192.0.2.3", "192.0.2.2"
		if err := st.RecordAuthBlocks(ctx, []store.AuthBlock{{Identifier: earlier, FailedAttempts: 20,
			LastAttemptAt: start.Add(-10 * time.Second), BlockedUntil: start.Add(30 * time.Second)}}); err != nil {
			t.Fatal(err)
		}
		log := &auditLog{}
		l := NewFailureLimiter(st, log, FailureOptions{Limit: 3, RefreshInterval: 5 * time.Second})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l.Run(runCtx) }()
		synctest.Wait()
		wantBlocked(t, l, earlier, 30*time.Second)

		// Another replica's block arrives with the next refresh.
		if err := st.RecordAuthBlocks(ctx, []store.AuthBlock{{Identifier: later, FailedAttempts: 20,
			LastAttemptAt: start, BlockedUntil: start.Add(time.Minute)}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		wantBlocked(t, l, later, 55*time.Second)

		fail(l, ip, 3)
		fail(l, once, 1)
		synctest.Wait()
		got := activeBlocks(t, st, time.Now())
		if len(got) != 3 || got[0].Identifier != ip || got[0].FailedAttempts != 3 {
			t.Fatalf("blocks in the store = %+v, want %s's written by Run", got, ip)
		}
		if rows := log.of(ip); len(rows) != 1 {
			t.Fatalf("rows of %s during the window = %d, want 1", ip, len(rows))
		}

		time.Sleep(untilNextWindow(time.Now()))
		synctest.Wait()
		rows := log.of(ip)
		if len(rows) != 2 || rows[1].Metadata["count"] != int64(2) || rows[1].Metadata["blocked"] != true {
			t.Fatalf("rows of %s after the window = %+v, want a blocked summary of 2", ip, rows)
		}
		if rows := log.of(once); len(rows) != 1 {
			t.Fatalf("rows of %s, which failed once = %+v, want only the first failure's", once, rows)
		}
		if s := l.Stats(); s.Blocked != 0 || s.Tracked != 0 {
			t.Errorf("stats after the window = %+v, want expired blocks and counts forgotten", s)
		}

		fail(l, last, 2)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if rows := log.of(last); len(rows) != 2 || rows[1].Metadata["count"] != int64(1) {
			t.Fatalf("rows of %s after Run stopped = %+v, want the first and a summary of 1", last, rows)
		}
	})
}

func TestBound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"/v1/models", 512, "/v1/models"},
		{"abcdef", 3, "abc"},
		{"", 10, ""},
		{"abc", 0, ""},
		{"héllo", 2, "h"}, // never half a character
		{"héllo", 3, "hé"},
		{"a\x00b\x1bc\x7fd", 100, "a\ufffdb\ufffdc\ufffdd"},
		{"line\r\nforged", 100, "line\ufffd\ufffdforged"},
		{"x\u202ey\u2028z\u200b", 100, "x\ufffdy\ufffdz\ufffd"},
		{"bad\xff\xfeutf8", 100, "bad\ufffd\ufffdutf8"},
		{"ab\xff", 4, "ab"}, // no room for the replacement
		{"日本語", 7, "日本"},
	}
	for _, tc := range tests {
		got := Bound(tc.in, tc.n)
		if got != tc.want {
			t.Errorf("Bound(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
		if len(got) > max(tc.n, 0) || !utf8.ValidString(got) {
			t.Errorf("Bound(%q, %d) = %q: longer than the bound or invalid UTF-8", tc.in, tc.n, got)
		}
	}
}

func BenchmarkBlockedNobodyBlocked(b *testing.B) {
	l := NewFailureLimiter(nil, nil, FailureOptions{})
	for b.Loop() {
		if _, blocked := l.Blocked("192.0.2.1"); blocked {
			b.Fatal("blocked")
		}
	}
}
