package retention

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// now is the fixed clock of every test.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	db, err := sqlite.Open(t.Context(), sqlite.Options{Path: ":memory:"})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	teststore.Migrate(t, schema.DriverSQLite, db.SchemaDSN())
	return db
}

func openPostgres(t *testing.T, url string) store.Store {
	t.Helper()
	db, err := postgres.Open(t.Context(), postgres.Options{URL: url, PoolSize: 2})
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var backends = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"SQLite", openSQLite},
	{"Postgres", func(t *testing.T) store.Store { return openPostgres(t, teststore.PostgresURL(t)) }},
}

// counts is how many rows of each kind a store holds.
type counts struct{ usage, audit, tokens int64 }

// Seeded rows: old ones are beyond a one-day retention, recent ones within
// it; of the tokens, 3 expired two days ago, 1 an hour ago, 1 expires
// tomorrow.
var seeded = counts{usage: 7, audit: 6, tokens: 5}

const oldUsage, oldAudit, oldTokens = 5, 4, 3

func seedUsage(t *testing.T, s store.Store, old, recent int) {
	t.Helper()
	var rows []store.Usage
	for i := range old + recent {
		at := now.Add(-time.Hour)
		if i < old {
			at = now.Add(-2*day - time.Duration(i)*time.Minute)
		}
		rows = append(rows, store.Usage{ID: uuid.NewString(), CreatedAt: at, RequestID: "req",
			Endpoint: "/v1/chat/completions", Status: 200})
	}
	if err := s.InsertUsage(t.Context(), rows); err != nil {
		t.Fatalf("InsertUsage: %v", err)
	}
}

func seed(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	seedUsage(t, s, oldUsage, int(seeded.usage)-oldUsage)
	var events []store.AuditEvent
	for i := range seeded.audit {
		at := now.Add(-time.Minute)
		if i < oldAudit {
			at = now.Add(-3*day + time.Duration(i)*time.Minute)
		}
		events = append(events, store.AuditEvent{ID: uuid.NewString(), CreatedAt: at, Actor: "management",
			Action: "token.create", Outcome: store.OutcomeSuccess})
	}
	if err := s.InsertAuditEvents(ctx, events); err != nil {
		t.Fatalf("InsertAuditEvents: %v", err)
	}
	p := &store.Project{ID: uuid.NewString(), Name: "p", Provider: store.ProviderOpenAI,
		BaseURL: "https://api.openai.com/v1", APIKeyEncrypted: []byte{1}, IsActive: true,
		CreatedAt: now.Add(-10 * day), UpdatedAt: now.Add(-10 * day)}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	expiries := []time.Time{now.Add(-2 * day), now.Add(-3 * day), now.Add(-2*day - time.Hour),
		now.Add(-time.Hour), now.Add(day)}
	blocks := []store.AuthBlock{
		{Identifier: "203.0.113.1", FailedAttempts: 30, LastAttemptAt: now.Add(-2 * day), BlockedUntil: now.Add(-2*day + time.Minute)},
		{Identifier: "203.0.113.2", FailedAttempts: 30, LastAttemptAt: now, BlockedUntil: now.Add(time.Minute)},
	}
	if err := s.RecordAuthBlocks(ctx, blocks); err != nil {
		t.Fatalf("RecordAuthBlocks: %v", err)
	}
	for _, exp := range expiries {
		id := uuid.NewString()
		tok := &store.Token{ID: id, ProjectID: p.ID, Hash: id, Prefix: "wt_", ExpiresAt: exp, IsActive: true,
			CreatedAt: now.Add(-5 * day)}
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
	}
}

// rowsOf returns the deleted-row counts of res, without the partitions
// created (which only PostgreSQL has).
func rowsOf(res Result) Result {
	res.PartitionsCreated = 0
	return res
}

func count(t *testing.T, s store.Store) counts {
	t.Helper()
	ctx := t.Context()
	u, err := s.SumUsage(ctx, store.UsageFilter{})
	if err != nil {
		t.Fatalf("SumUsage: %v", err)
	}
	_, audit, err := s.ListAuditEvents(ctx, store.AuditFilter{Page: store.Page{Page: 1, PageSize: 1}})
	if err != nil {
		t.Fatalf("ListAuditEvents: %v", err)
	}
	_, tokens, err := s.ListTokens(ctx, store.TokenFilter{Page: store.Page{Page: 1, PageSize: 1}})
	if err != nil {
		t.Fatalf("ListTokens: %v", err)
	}
	return counts{usage: u[0].Requests, audit: int64(audit), tokens: int64(tokens)}
}

func TestSweepOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		opts   Options
		want   Result
		remain counts
	}{
		{
			name:   "all kinds in small batches",
			opts:   Options{Usage: day, Audit: day, Tokens: day, BatchSize: 2},
			want:   Result{Usage: oldUsage, Audit: oldAudit, Tokens: oldTokens},
			remain: counts{usage: 2, audit: 2, tokens: 2},
		},
		{
			name:   "all kinds in one batch each",
			opts:   Options{Usage: day, Audit: day, Tokens: day},
			want:   Result{Usage: oldUsage, Audit: oldAudit, Tokens: oldTokens},
			remain: counts{usage: 2, audit: 2, tokens: 2},
		},
		{
			name:   "batch size equal to the old rows",
			opts:   Options{Usage: day, BatchSize: oldUsage},
			want:   Result{Usage: oldUsage},
			remain: counts{usage: 2, audit: seeded.audit, tokens: seeded.tokens},
		},
		{
			name:   "zero keeps audit and tokens",
			opts:   Options{Usage: day, BatchSize: 3},
			want:   Result{Usage: oldUsage},
			remain: counts{usage: 2, audit: seeded.audit, tokens: seeded.tokens},
		},
		{
			name:   "long periods keep everything",
			opts:   Options{Usage: 30 * day, Audit: 30 * day, Tokens: 30 * day},
			remain: seeded,
		},
		{
			name:   "zero keeps everything",
			remain: seeded,
		},
		{
			name:   "tokens expired an hour ago are past a 30-minute period",
			opts:   Options{Tokens: 30 * time.Minute},
			want:   Result{Tokens: oldTokens + 1},
			remain: counts{usage: seeded.usage, audit: seeded.audit, tokens: 1},
		},
	}
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					s := bk.open(t)
					seed(t, s)
					opts := tc.opts
					opts.Pause = time.Millisecond
					opts.Now = func() time.Time { return now }
					sw := New(s, opts)
					res, ran, err := sw.SweepOnce(t.Context())
					if err != nil || !ran {
						t.Fatalf("SweepOnce = (%+v, %t, %v), want a sweep", res, ran, err)
					}
					want := tc.want
					want.AuthBlocks = 1 // the block that ended two days ago, whatever the settings
					if rowsOf(res) != want {
						t.Errorf("SweepOnce deleted %+v, want %+v", res, want)
					}
					if got := count(t, s); got != tc.remain {
						t.Errorf("rows left %+v, want %+v", got, tc.remain)
					}
					res, _, err = sw.SweepOnce(t.Context())
					if err != nil || res != (Result{}) {
						t.Errorf("second SweepOnce = (%+v, %v), want nothing deleted", res, err)
					}
				})
			}
		})
	}
}

// TestLockHeldElsewhere holds the lock on one store (replica) while the
// other sweeps.
func TestLockHeldElsewhere(t *testing.T) {
	t.Parallel()
	url := teststore.PostgresURL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	seed(t, a)
	release, ok, err := a.TryLock(t.Context(), LockName)
	if err != nil || !ok {
		t.Fatalf("TryLock = (%t, %v), want the lock", ok, err)
	}
	sw := New(b, Options{Usage: day, Audit: day, Tokens: day, Now: func() time.Time { return now }})
	res, ran, err := sw.SweepOnce(t.Context())
	if err != nil || ran || res != (Result{}) {
		t.Fatalf("SweepOnce while another replica holds the lock = (%+v, %t, %v), want (zero, false, nil)", res, ran, err)
	}
	if got := count(t, b); got != seeded {
		t.Errorf("rows left %+v, want all %+v", got, seeded)
	}
	release()
	res, ran, err = sw.SweepOnce(t.Context())
	if err != nil || !ran {
		t.Fatalf("SweepOnce after release = (%+v, %t, %v), want a sweep", res, ran, err)
	}
	if want := (Result{Usage: oldUsage, Audit: oldAudit, Tokens: oldTokens, AuthBlocks: 1}); rowsOf(res) != want {
		t.Errorf("SweepOnce deleted %+v, want %+v", res, want)
	}
}

// heldStore holds a sweep after its first usage batch: it closes deleted
// and waits for resume.
type heldStore struct {
	Store
	once            sync.Once
	deleted, resume chan struct{}
}

func (h *heldStore) DeleteUsageBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := h.Store.DeleteUsageBefore(ctx, t, limit)
	h.once.Do(func() {
		close(h.deleted)
		<-h.resume
	})
	return n, err
}

// TestConcurrentSweeps runs a slow sweep on one replica and a second sweep
// on another while the first is between batches.
func TestConcurrentSweeps(t *testing.T) {
	t.Parallel()
	url := teststore.PostgresURL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	seedUsage(t, a, 6, 1)
	opts := Options{Usage: day, BatchSize: 1, Pause: time.Millisecond, Now: func() time.Time { return now }}
	type outcome struct {
		res Result
		ran bool
		err error
	}
	done := make(chan outcome, 1)
	held := &heldStore{Store: a, deleted: make(chan struct{}), resume: make(chan struct{})}
	go func() {
		res, ran, err := New(held, opts).SweepOnce(t.Context())
		done <- outcome{res, ran, err}
	}()
	select {
	case <-held.deleted:
	case <-time.After(5 * time.Second):
		t.Fatalf("the first sweep deleted nothing within 5s")
	}
	res, ran, err := New(b, opts).SweepOnce(t.Context())
	close(held.resume)
	if err != nil || ran || res != (Result{}) {
		t.Errorf("second SweepOnce during the first = (%+v, %t, %v), want (zero, false, nil)", res, ran, err)
	}
	first := <-done
	if first.err != nil || !first.ran || rowsOf(first.res) != (Result{Usage: 6}) {
		t.Errorf("first SweepOnce = (%+v, %t, %v), want 6 usage rows deleted", first.res, first.ran, first.err)
	}
	if got := count(t, b).usage; got != 1 {
		t.Errorf("%d usage rows left, want 1", got)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := openSQLite(t)
		seed(t, s)
		sw := New(s, Options{Usage: day, Audit: day, Tokens: day, Interval: 100 * time.Millisecond, BatchSize: 2,
			Now: func() time.Time { return now }})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sw.Run(ctx) }()

		// awaitUsage lets the bubble's clock run, looking whenever Run is
		// idle, until want rows are left.
		awaitUsage := func(want int64) {
			t.Helper()
			deadline := time.Now().Add(3 * time.Second)
			for {
				synctest.Wait()
				if count(t, s).usage == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("usage rows = %d after 3s of Run, want %d", count(t, s).usage, want)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		awaitUsage(2)
		// Rows that age out later go in a later sweep.
		seedUsage(t, s, 3, 0)
		awaitUsage(2)
		if got, want := count(t, s), (counts{usage: 2, audit: 2, tokens: 2}); got != want {
			t.Errorf("rows left %+v, want %+v", got, want)
		}

		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Run did not return within 2s of cancellation")
		}
	})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	sw := New(nil, Options{})
	if sw.opts.Interval != DefaultInterval || sw.opts.BatchSize != DefaultBatchSize || sw.opts.Pause != DefaultPause ||
		sw.opts.Logger == nil || sw.opts.Now == nil {
		t.Errorf("New(Options{}) options = %+v, want the defaults", sw.opts)
	}
}

// partitionNames lists the partitions of table named for a day of 2025.
func partitionNames(t *testing.T, url, table string) []string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, err := conn.Query(t.Context(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1) AND c.relname LIKE $2 ORDER BY 1`, table, table+"_p2025%")
	if err != nil {
		t.Fatalf("list partitions: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list partitions: %v", err)
	}
	return names
}

// TestPartitionsFollowTheClock moves the sweeper's clock: each sweep
// creates the partitions of today and the days ahead, and drops those of
// the days that ended before the retention period, rows and all.
func TestPartitionsFollowTheClock(t *testing.T) {
	t.Parallel()
	url := teststore.PostgresURL(t)
	s := openPostgres(t, url)
	clock := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	sw := New(s, Options{Usage: 3 * day, Audit: 3 * day, PartitionsAhead: 2, Now: func() time.Time { return clock }})
	sweep := func(want Result) {
		t.Helper()
		res, ran, err := sw.SweepOnce(t.Context())
		if err != nil || !ran || res != want {
			t.Fatalf("SweepOnce at %s = (%+v, %t, %v), want (%+v, true, nil)", clock, res, ran, err, want)
		}
	}
	sweep(Result{PartitionsCreated: 6})
	for _, table := range []string{"usage", "audit_events"} {
		diffStrings(t, table+" partitions", []string{table + "_p20250601", table + "_p20250602", table + "_p20250603"},
			partitionNames(t, url, table))
	}
	var rows []store.Usage
	var events []store.AuditEvent
	for d := range 3 {
		for range d + 1 {
			at := clock.Add(time.Duration(d) * day)
			rows = append(rows, store.Usage{ID: uuid.NewString(), CreatedAt: at, RequestID: "r",
				Endpoint: "/v1/chat/completions", Status: 200})
			events = append(events, store.AuditEvent{ID: uuid.NewString(), CreatedAt: at, Actor: "management",
				Action: "token.create", Outcome: store.OutcomeSuccess})
		}
	}
	if err := s.InsertUsage(t.Context(), rows); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertAuditEvents(t.Context(), events); err != nil {
		t.Fatal(err)
	}

	// Four days later the cutoff is June 2 00:00: June 1 goes (its one
	// row), June 2 stays although part of it is older than three days.
	// Days ahead start from today: June 4, passed while no sweep ran, gets
	// no partition (a late row for it would go to the default partition).
	clock = clock.Add(4 * day)
	sweep(Result{Usage: 1, Audit: 1, PartitionsCreated: 6})
	for _, table := range []string{"usage", "audit_events"} {
		diffStrings(t, table+" partitions", []string{table + "_p20250602", table + "_p20250603",
			table + "_p20250605", table + "_p20250606", table + "_p20250607"}, partitionNames(t, url, table))
	}
	if got := count(t, s); got.usage != 5 || got.audit != 5 {
		t.Errorf("rows left %+v, want 5 usage rows and 5 audit events", got)
	}
}

func diffStrings(t *testing.T, what string, want, got []string) {
	t.Helper()
	if !slices.Equal(want, got) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

// TestSweepMemory deletes summaries and transcripts older than the memory
// period, and nothing when it is zero.
func TestSweepMemory(t *testing.T) {
	t.Parallel()
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			s := bk.open(t)
			ctx := t.Context()
			for i, at := range []time.Time{now.Add(-3 * day), now.Add(-2 * day), now.Add(-time.Hour)} {
				sid := "s" + string(rune('0'+i))
				if err := s.SaveTranscript(ctx, &store.MemorySession{UserID: "u", SessionID: sid, Transcript: "[]",
					LastActivity: at, CreatedAt: at}); err != nil {
					t.Fatal(err)
				}
				got, err := s.ClaimMemorySessions(ctx, store.MemoryClaim{Worker: "w", IdleBefore: at.Add(time.Second),
					Now: at, LeaseUntil: at.Add(time.Minute), Limit: 1})
				if err != nil || len(got) != 1 {
					t.Fatalf("claim = (%d, %v)", len(got), err)
				}
				if err := s.CompleteMemorySession(ctx, "w", at, &store.SessionSummary{ID: uuid.NewString(), UserID: "u",
					SessionID: sid, SummaryVersion: 1, CreatedAt: at}); err != nil {
					t.Fatal(err)
				}
			}
			res, _, err := New(s, Options{Now: func() time.Time { return now }}).SweepOnce(ctx)
			if err != nil || res.Summaries != 0 || res.MemorySessions != 0 {
				t.Fatalf("zero period: SweepOnce = (%+v, %v), want memory kept", res, err)
			}
			res, _, err = New(s, Options{Memory: day, BatchSize: 1, Pause: time.Millisecond,
				Now: func() time.Time { return now }}).SweepOnce(ctx)
			if err != nil || res.Summaries != 2 || res.MemorySessions != 2 {
				t.Fatalf("SweepOnce = (%+v, %v), want 2 summaries and 2 sessions", res, err)
			}
			if _, err := s.GetMemorySession(ctx, "u", "s2"); err != nil {
				t.Errorf("recent session deleted: %v", err)
			}
			if _, total, _ := s.ListSessionSummaries(ctx, store.SummaryFilter{Page: store.Page{Page: 1, PageSize: 10}}); total != 1 {
				t.Errorf("%d summaries left, want 1", total)
			}
		})
	}
}
