package usage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

var errDown = errors.New("database down")

// sink is the real SQLite store, instrumented: it can be switched to fail
// and it records every batch it is given.
type sink struct {
	*sqlite.DB
	failing atomic.Bool

	mu           sync.Mutex
	usageBatches []int
	auditBatches []int
	touchCalls   [][]store.TokenTouch
}

func (s *sink) InsertUsage(ctx context.Context, rows []store.Usage) error {
	s.mu.Lock()
	s.usageBatches = append(s.usageBatches, len(rows))
	s.mu.Unlock()
	if s.failing.Load() {
		return errDown
	}
	return s.DB.InsertUsage(ctx, rows)
}

func (s *sink) InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error {
	s.mu.Lock()
	s.auditBatches = append(s.auditBatches, len(events))
	s.mu.Unlock()
	if s.failing.Load() {
		return errDown
	}
	return s.DB.InsertAuditEvents(ctx, events)
}

func (s *sink) TouchTokens(ctx context.Context, touches []store.TokenTouch) error {
	s.mu.Lock()
	s.touchCalls = append(s.touchCalls, append([]store.TokenTouch(nil), touches...))
	s.mu.Unlock()
	if s.failing.Load() {
		return errDown
	}
	return s.DB.TouchTokens(ctx, touches)
}

func (s *sink) batches() (usageSizes, auditSizes []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.usageBatches...), append([]int(nil), s.auditBatches...)
}

func newSink(t *testing.T) *sink {
	t.Helper()
	return &sink{DB: teststore.SQLite(t)}
}

// start runs r and returns a function that cancels Run and returns its
// result; the test's cleanup stops it too.
func start(t *testing.T, r *usage.Recorder) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually lets the bubble's clock run until cond holds, or fails the
// test after 30s of it. It must be called in a synctest bubble: cond is
// checked only when every goroutine of the bubble is blocked, so between
// checks the recorder has done all it can at that instant.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		synctest.Wait()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func total(t *testing.T, s *sink) store.UsageTotal {
	t.Helper()
	got, err := s.SumUsage(context.Background(), store.UsageFilter{})
	if err != nil {
		t.Fatalf("sum usage: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("sum usage returned %d totals, want 1", len(got))
	}
	return got[0]
}

func row(i int) store.Usage {
	return store.Usage{
		RequestID: fmt.Sprintf("req-%d", i), Model: "gpt-test", Endpoint: "/v1/chat/completions",
		Status: 200, PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, Latency: 12 * time.Millisecond,
	}
}

func TestConcurrentRowsAllLand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		r := usage.New(s, usage.Options{FlushInterval: 20 * time.Millisecond})
		stop := start(t, r)
		const workers, perWorker = 32, 10_000 / 32
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					r.Usage(row(w*perWorker + i))
				}
			})
		}
		wg.Wait()
		// A remainder so the total is exactly 10,000.
		for i := workers * perWorker; i < 10_000; i++ {
			r.Usage(row(i))
		}
		eventually(t, "10,000 rows written", func() bool { return r.Stats().WrittenUsage == 10_000 })
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		got := total(t, s)
		want := store.UsageTotal{Requests: 10_000, PromptTokens: 30_000, CompletionTokens: 40_000, TotalTokens: 70_000}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("usage totals (-want +got):\n%s", diff)
		}
		want2 := usage.Stats{WrittenUsage: 10_000}
		if diff := cmp.Diff(want2, r.Stats()); diff != "" {
			t.Fatalf("stats (-want +got):\n%s", diff)
		}
		usageSizes, _ := s.batches()
		for _, n := range usageSizes {
			if n > 500 {
				t.Fatalf("a batch of %d rows, want at most the default 500", n)
			}
		}
	})
}

func TestBatchesRespectBatchSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		// No ticks: only full batches are written until the final flush.
		r := usage.New(s, usage.Options{BatchSize: 100, FlushInterval: time.Hour})
		stop := start(t, r)
		for i := range 1050 {
			r.Usage(row(i))
		}
		for range 230 {
			r.Audit(store.AuditEvent{Actor: "admin", Action: "token.create", Outcome: store.OutcomeSuccess})
		}
		eventually(t, "ten full usage batches and two audit batches", func() bool {
			st := r.Stats()
			return st.WrittenUsage == 1000 && st.WrittenAudit == 200
		})
		// The partial batches wait for a tick or the final flush: a minute
		// of the bubble's clock, well short of the hour, writes nothing.
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := r.Stats(); st.QueuedUsage != 50 || st.QueuedAudit != 30 {
			t.Fatalf("queued %d usage, %d audit before the final flush, want 50 and 30", st.QueuedUsage, st.QueuedAudit)
		}
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		usageSizes, auditSizes := s.batches()
		wantUsage := []int{100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 50}
		if diff := cmp.Diff(wantUsage, usageSizes); diff != "" {
			t.Fatalf("usage batch sizes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]int{100, 100, 30}, auditSizes); diff != "" {
			t.Fatalf("audit batch sizes (-want +got):\n%s", diff)
		}
		if got := total(t, s).Requests; got != 1050 {
			t.Fatalf("%d usage rows in the database, want 1050", got)
		}
	})
}

func TestFlushIntervalFlushesALoneRow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		r := usage.New(s, usage.Options{FlushInterval: 50 * time.Millisecond})
		start(t, r)
		begin := time.Now()
		r.Usage(row(1))
		eventually(t, "the lone row written", func() bool { return total(t, s).Requests == 1 })
		if waited := time.Since(begin); waited > time.Second {
			t.Fatalf("a lone row waited %v with FlushInterval 50ms", waited)
		}
	})
}

func TestFinalFlushOnCancel(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	r := usage.New(s, usage.Options{FlushInterval: time.Hour})
	stop := start(t, r)
	for i := range 120 {
		r.Usage(row(i))
	}
	for range 7 {
		r.Audit(store.AuditEvent{Actor: "admin", Action: "project.update", Outcome: store.OutcomeSuccess})
	}
	if got := total(t, s).Requests; got != 0 {
		t.Fatalf("%d rows written before the final flush, want 0 (no tick, no full batch)", got)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := total(t, s).Requests; got != 120 {
		t.Fatalf("%d usage rows after the final flush, want 120", got)
	}
	if _, n, err := s.ListAuditEvents(context.Background(), store.AuditFilter{Page: store.Page{Page: 1, PageSize: 50}}); err != nil || n != 7 {
		t.Fatalf("audit events after the final flush: %d, %v; want 7", n, err)
	}

	// The recorder is closed: later rows are dropped and counted.
	r.Usage(row(999))
	r.Audit(store.AuditEvent{Actor: "admin", Action: "late", Outcome: store.OutcomeSuccess})
	r.Touch("t", time.Now())
	want := usage.Stats{WrittenUsage: 120, WrittenAudit: 7, DroppedUsage: 1, DroppedAudit: 1, DroppedTouches: 1}
	if diff := cmp.Diff(want, r.Stats()); diff != "" {
		t.Fatalf("stats after Run returned (-want +got):\n%s", diff)
	}
}

// logBuffer collects log output written from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(msg string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), msg)
}

func TestSinkFailsThenRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		s.failing.Store(true)
		var logs logBuffer
		r := usage.New(s, usage.Options{
			BatchSize: 100, FlushInterval: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		stop := start(t, r)
		for i := range 2000 {
			r.Usage(row(i))
		}
		for range 150 {
			r.Audit(store.AuditEvent{Actor: "admin", Action: "token.revoke", Outcome: store.OutcomeSuccess})
		}
		eventually(t, "three failed flushes", func() bool { return r.Stats().FlushErrors >= 3 })
		if got := total(t, s).Requests; got != 0 {
			t.Fatalf("%d rows in the database while it was failing", got)
		}
		if st := r.Stats(); st.QueuedUsage != 2000 || st.QueuedAudit != 150 {
			t.Fatalf("queued %d usage, %d audit during the outage, want all 2000 and 150 kept", st.QueuedUsage, st.QueuedAudit)
		}
		s.failing.Store(false)
		eventually(t, "everything written after recovery", func() bool {
			st := r.Stats()
			return st.WrittenUsage == 2000 && st.WrittenAudit == 150
		})
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got := total(t, s).Requests; got != 2000 {
			t.Fatalf("%d usage rows after recovery, want 2000", got)
		}
		if st := r.Stats(); st.DroppedUsage != 0 || st.DroppedAudit != 0 || st.FlushErrors < 3 {
			t.Fatalf("stats %+v: want no drops and the failed flushes counted", st)
		}
		if n := logs.count("usage sink failing"); n != 1 {
			t.Fatalf("%d 'failing' log lines for one outage, want 1:\n%s", n, logs.buf.String())
		}
		if n := logs.count("usage sink recovered"); n != 1 {
			t.Fatalf("%d 'recovered' log lines for one outage, want 1", n)
		}
	})
}

func TestBufferFullDropsWithoutBlocking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		s.failing.Store(true)
		var logs logBuffer
		r := usage.New(s, usage.Options{
			BatchSize: 10, BufferSize: 100, FlushInterval: 10 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		stop := start(t, r)
		begin := time.Now()
		var wg sync.WaitGroup
		for w := range 5 {
			wg.Go(func() {
				for i := range 50 {
					r.Usage(row(w*50 + i))
					r.Audit(store.AuditEvent{Actor: "admin", Action: "x", Outcome: store.OutcomeFailure})
				}
			})
		}
		wg.Wait()
		if took := time.Since(begin); took > time.Second {
			t.Fatalf("recording 500 rows against a failing database took %v", took)
		}
		st := r.Stats()
		if st.QueuedUsage != 100 || st.DroppedUsage != 150 || st.QueuedAudit != 100 || st.DroppedAudit != 150 {
			t.Fatalf("stats %+v: want 100 queued and 150 dropped of each kind", st)
		}
		eventually(t, "the drop logged", func() bool { return logs.count("dropping rows") == 1 })
		s.failing.Store(false)
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got := total(t, s).Requests; got != 100 {
			t.Fatalf("%d usage rows written, want the 100 kept", got)
		}
		if n := logs.count("dropping rows"); n != 1 {
			t.Fatalf("%d drop log lines, want 1", n)
		}
	})
}

func TestFinalFlushGivesUpAfterShutdownTimeout(t *testing.T) {
	s := newSink(t)
	s.failing.Store(true)
	r := usage.New(s, usage.Options{FlushInterval: time.Hour, ShutdownTimeout: 300 * time.Millisecond})
	stop := start(t, r)
	for i := range 5 {
		r.Usage(row(i))
	}
	begin := time.Now()
	err := stop()
	if err == nil || !errors.Is(err, errDown) || !strings.Contains(err.Error(), "5 usage rows") {
		t.Fatalf("Run = %v, want an error counting 5 unwritten rows and wrapping the sink's", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("final flush took %v with ShutdownTimeout 300ms", took)
	}
}

func TestDuplicateRowsDoNotBlockTheBuffer(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	ctx := context.Background()
	dup := row(0)
	dup.ID, dup.CreatedAt = uuid.NewString(), time.Now().UTC()
	if err := s.DB.InsertUsage(ctx, []store.Usage{dup}); err != nil {
		t.Fatalf("insert usage: %v", err)
	}
	r := usage.New(s, usage.Options{FlushInterval: time.Hour})
	stop := start(t, r)
	for i := range 10 {
		if i == 5 {
			r.Usage(dup)
			continue
		}
		r.Usage(row(i))
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := total(t, s).Requests; got != 10 {
		t.Fatalf("%d usage rows, want the 9 new ones besides the one already stored", got)
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	r := usage.New(newSink(t), usage.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := r.Run(ctx); err == nil {
		t.Fatal("second Run: no error")
	}
}

func TestTouchAggregates(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	p := &store.Project{ID: uuid.NewString(), Name: "p", Provider: store.ProviderOpenAI, BaseURL: "https://api.openai.com/v1",
		APIKeyEncrypted: []byte{1}, IsActive: true, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("create project: %v", err)
	}
	tokens := []string{uuid.NewString(), uuid.NewString()}
	for i, id := range tokens {
		tok := &store.Token{ID: id, ProjectID: p.ID, Hash: fmt.Sprintf("%064d", i), Prefix: "sk-x", IsActive: true,
			ExpiresAt: now.Add(time.Hour), CreatedAt: now}
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("create token: %v", err)
		}
	}
	r := usage.New(s, usage.Options{FlushInterval: time.Hour})
	stop := start(t, r)
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for i := range 10 {
				r.Touch(tokens[0], now.Add(time.Duration(w*10+i)*time.Second))
			}
		})
	}
	wg.Wait()
	for i := range 3 {
		r.Touch(tokens[1], now.Add(-time.Duration(i)*time.Minute))
	}
	if st := r.Stats(); st.QueuedTouches != 2 {
		t.Fatalf("%d touches queued, want 2 (one per token)", st.QueuedTouches)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []store.TokenTouch{
		{TokenID: tokens[0], Requests: 100, LastUsedAt: now.Add(99 * time.Second)},
		{TokenID: tokens[1], Requests: 3, LastUsedAt: now},
	}
	if tokens[1] < tokens[0] {
		want[0], want[1] = want[1], want[0]
	}
	s.mu.Lock()
	calls := s.touchCalls
	s.mu.Unlock()
	if diff := cmp.Diff([][]store.TokenTouch{want}, calls); diff != "" {
		t.Fatalf("TouchTokens calls (-want +got):\n%s", diff)
	}
	got, err := s.GetToken(ctx, tokens[0])
	if err != nil {
		t.Fatalf("get token: %v", err)
	}
	if got.RequestCount != 100 || got.LastUsedAt == nil || !got.LastUsedAt.Equal(now.Add(99*time.Second)) {
		t.Fatalf("token after touches: request_count %d, last_used_at %v; want 100, %v",
			got.RequestCount, got.LastUsedAt, now.Add(99*time.Second))
	}
}

func TestTouchesSurviveAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		s.failing.Store(true)
		r := usage.New(s, usage.Options{FlushInterval: 10 * time.Millisecond})
		stop := start(t, r)
		at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		for range 4 {
			r.Touch("tok", at)
		}
		eventually(t, "a failed touch flush", func() bool { return r.Stats().FlushErrors >= 1 })
		r.Touch("tok", at.Add(time.Second))
		s.failing.Store(false)
		eventually(t, "touches flushed", func() bool { return r.Stats().QueuedTouches == 0 })
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		s.mu.Lock()
		last := s.touchCalls[len(s.touchCalls)-1]
		s.mu.Unlock()
		want := []store.TokenTouch{{TokenID: "tok", Requests: 5, LastUsedAt: at.Add(time.Second)}}
		if diff := cmp.Diff(want, last); diff != "" {
			t.Fatalf("touches written after the outage (-want +got):\n%s", diff)
		}
	})
}

func TestAuditRoundTrip(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	r := usage.New(s, usage.Options{FlushInterval: time.Hour})
	stop := start(t, r)
	ctx := context.Background()
	explicit := store.AuditEvent{
		ID: uuid.NewString(), CreatedAt: time.Date(2025, 6, 1, 12, 0, 0, 123000, time.UTC),
		Actor: "management", Action: "token.create", Outcome: store.OutcomeSuccess,
		RequestID: "req-1", ClientIP: "10.0.0.1", Method: "POST", Path: "/manage/tokens", Reason: "",
		Metadata: map[string]any{"label": "ci", "max_requests": float64(10)},
	}
	before := time.Now().UTC()
	r.Audit(explicit)
	r.Audit(store.AuditEvent{Actor: "anonymous", Action: "auth", Outcome: store.OutcomeDenied, Reason: "expired token"})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, err := s.GetAuditEvent(ctx, explicit.ID)
	if err != nil {
		t.Fatalf("get audit event: %v", err)
	}
	if diff := cmp.Diff(&explicit, got); diff != "" {
		t.Fatalf("audit event round trip (-want +got):\n%s", diff)
	}
	list, n, err := s.ListAuditEvents(ctx, store.AuditFilter{Action: "auth", Page: store.Page{Page: 1, PageSize: 10}})
	if err != nil || n != 1 {
		t.Fatalf("list audit events: %d, %v; want 1", n, err)
	}
	filled := list[0]
	id, err := uuid.Parse(filled.ID)
	if err != nil || id.Version() != 7 {
		t.Fatalf("filled ID %q: want a UUIDv7 (%v)", filled.ID, err)
	}
	if filled.CreatedAt.Before(before.Truncate(time.Microsecond)) || filled.CreatedAt.After(time.Now()) || filled.CreatedAt.Location() != time.UTC {
		t.Fatalf("filled CreatedAt %v: want UTC now", filled.CreatedAt)
	}
}

// TestTouchLastUsedDoesNotCount checks the touch for requests a quota
// counter already counted: it moves last_used_at and adds nothing to
// request_count, also when merged with counted touches of the token.
func TestTouchLastUsedDoesNotCount(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	p := &store.Project{ID: uuid.NewString(), Name: "p", Provider: store.ProviderOpenAI, BaseURL: "https://api.openai.com/v1",
		APIKeyEncrypted: []byte{1}, IsActive: true, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("create project: %v", err)
	}
	tok := &store.Token{ID: uuid.NewString(), ProjectID: p.ID, Hash: fmt.Sprintf("%064d", 1), Prefix: "sk-x", IsActive: true,
		ExpiresAt: now.Add(time.Hour), CreatedAt: now, RequestCount: 16}
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatalf("create token: %v", err)
	}
	r := usage.New(s, usage.Options{FlushInterval: time.Hour})
	stop := start(t, r)
	for i := range 5 {
		r.TouchLastUsed(tok.ID, now.Add(time.Duration(i)*time.Second))
	}
	r.Touch(tok.ID, now) // a counted touch of the same token merges
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, err := s.GetToken(ctx, tok.ID)
	if err != nil {
		t.Fatalf("get token: %v", err)
	}
	if got.RequestCount != 17 || got.LastUsedAt == nil || !got.LastUsedAt.Equal(now.Add(4*time.Second)) {
		t.Fatalf("token after touches: request_count %d, last_used_at %v; want 17, %v",
			got.RequestCount, got.LastUsedAt, now.Add(4*time.Second))
	}
}

// lostAck is a store whose first usage batch commits but reports an error,
// as when the connection drops before the commit is acknowledged.
type lostAck struct {
	store.Store
	once sync.Once
}

func (s *lostAck) InsertUsage(ctx context.Context, rows []store.Usage) error {
	err := s.Store.InsertUsage(ctx, rows)
	lost := false
	s.once.Do(func() { lost = err == nil })
	if lost {
		return errDown
	}
	return err
}

// TestRetriedBatchCountedOnce: the recorder retries a batch whose commit it
// did not hear of; the rows and the usage roll-up (which SumUsage reads)
// count it once, on both stores.
func TestRetriedBatchCountedOnce(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(testing.TB) store.Store{
		"SQLite":   func(t testing.TB) store.Store { return teststore.SQLite(t) },
		"Postgres": func(t testing.TB) store.Store { return teststore.Postgres(t) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := &lostAck{Store: open(t)}
			r := usage.New(s, usage.Options{BatchSize: 10, FlushInterval: time.Hour})
			stop := start(t, r)
			for i := range 25 {
				u := row(i)
				u.Model = []string{"a", "b"}[i%2]
				r.Usage(u)
			}
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			got, err := s.SumUsage(context.Background(), store.UsageFilter{GroupBy: store.GroupByModel})
			if err != nil {
				t.Fatalf("SumUsage: %v", err)
			}
			want := []store.UsageTotal{
				{Key: "a", Requests: 13, PromptTokens: 39, CompletionTokens: 52, TotalTokens: 91},
				{Key: "b", Requests: 12, PromptTokens: 36, CompletionTokens: 48, TotalTokens: 84},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("usage by model after a retried batch (-want +got):\n%s", diff)
			}
			if st := r.Stats(); st.FlushErrors == 0 {
				t.Errorf("FlushErrors = 0: the lost acknowledgement never happened, so nothing was retried")
			}
		})
	}
}
