package storetest

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func testTryLock(t *testing.T, s store.Store) {
	ctx := t.Context()
	release, ok, err := s.TryLock(ctx, "retention")
	if err != nil || !ok || release == nil {
		t.Fatalf("first TryLock = (release set %t, %t, %v), want the lock", release != nil, ok, err)
	}
	again, ok, err := s.TryLock(ctx, "retention")
	if err != nil || ok || again != nil {
		t.Fatalf("TryLock while held = (release set %t, %t, %v), want (false, false, nil)", again != nil, ok, err)
	}
	other, ok, err := s.TryLock(ctx, "other")
	if err != nil || !ok {
		t.Fatalf("TryLock of another name while the first is held = (%t, %v), want the lock", ok, err)
	}
	other()

	release()
	release() // idempotent
	release, ok, err = s.TryLock(ctx, "retention")
	if err != nil || !ok {
		t.Fatalf("TryLock after release = (%t, %v), want the lock", ok, err)
	}
	release()
}

func testTryLockConcurrent(t *testing.T, s store.Store) {
	const n = 4
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		winners  int
		releases []func()
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			release, ok, err := s.TryLock(t.Context(), "race")
			if err != nil {
				t.Errorf("TryLock: %v", err)
				return
			}
			if ok {
				mu.Lock()
				winners++
				releases = append(releases, release)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if winners != 1 {
		t.Errorf("%d of %d concurrent TryLock calls got the lock, want exactly 1", winners, n)
	}
	for _, r := range releases {
		r()
	}
}

// retentionKind drives one of the batched deletes: insert stores row i with
// times[i], in the order given, and remaining returns the numbers of the
// rows left.
type retentionKind struct {
	name      string
	insert    func(t *testing.T, s store.Store, times []time.Time, order []int)
	remaining func(t *testing.T, s store.Store) []int
	del       func(s store.Store, ctx context.Context, before time.Time, limit int) (int64, error)
}

var retentionKinds = []retentionKind{
	{
		name: "DeleteUsageBefore",
		insert: func(t *testing.T, s store.Store, times []time.Time, order []int) {
			var rows []store.Usage
			for _, i := range order {
				rows = append(rows, store.Usage{ID: uuid.NewString(), CreatedAt: times[i], RequestID: "req-" + strconv.Itoa(i),
					Model: strconv.Itoa(i), Endpoint: "/v1/chat/completions", Status: 200})
			}
			if err := s.InsertUsage(t.Context(), rows); err != nil {
				t.Fatalf("InsertUsage: %v", err)
			}
		},
		remaining: func(t *testing.T, s store.Store) []int {
			totals, err := s.SumUsage(t.Context(), store.UsageFilter{GroupBy: store.GroupByModel})
			if err != nil {
				t.Fatalf("SumUsage: %v", err)
			}
			out := make([]int, len(totals))
			for i, u := range totals {
				out[i] = atoi(t, u.Key)
			}
			return out
		},
		del: store.Store.DeleteUsageBefore,
	},
	{
		name: "DeleteAuditBefore",
		insert: func(t *testing.T, s store.Store, times []time.Time, order []int) {
			var events []store.AuditEvent
			for _, i := range order {
				events = append(events, store.AuditEvent{ID: uuid.NewString(), CreatedAt: times[i], Actor: "management",
					Action: "token.create", Outcome: store.OutcomeSuccess, Reason: strconv.Itoa(i)})
			}
			if err := s.InsertAuditEvents(t.Context(), events); err != nil {
				t.Fatalf("InsertAuditEvents: %v", err)
			}
		},
		remaining: func(t *testing.T, s store.Store) []int {
			events, _, err := s.ListAuditEvents(t.Context(), store.AuditFilter{Page: store.Page{Page: 1, PageSize: 100}})
			if err != nil {
				t.Fatalf("ListAuditEvents: %v", err)
			}
			out := make([]int, len(events))
			for i, e := range events {
				out[i] = atoi(t, e.Reason)
			}
			return out
		},
		del: store.Store.DeleteAuditBefore,
	},
	{
		name: "DeleteTokensExpiredBefore",
		insert: func(t *testing.T, s store.Store, times []time.Time, order []int) {
			p := mustCreateProject(t, s, newProject("retention"))
			for _, i := range order {
				tok := newToken(p.ID)
				tok.ExpiresAt = times[i]
				tok.CreatedAt = times[i].Add(-time.Hour)
				tok.Label = strconv.Itoa(i)
				mustCreateToken(t, s, tok)
			}
		},
		remaining: func(t *testing.T, s store.Store) []int {
			tokens, _, err := s.ListTokens(t.Context(), store.TokenFilter{Page: store.Page{Page: 1, PageSize: 100}})
			if err != nil {
				t.Fatalf("ListTokens: %v", err)
			}
			out := make([]int, len(tokens))
			for i, tok := range tokens {
				out[i] = atoi(t, tok.Label)
			}
			return out
		},
		del: store.Store.DeleteTokensExpiredBefore,
	},
	{
		name: "DeleteAuthBlocksBefore",
		insert: func(t *testing.T, s store.Store, times []time.Time, order []int) {
			var blocks []store.AuthBlock
			for _, i := range order {
				blocks = append(blocks, store.AuthBlock{Identifier: strconv.Itoa(i), FailedAttempts: 20,
					LastAttemptAt: times[i].Add(-time.Minute), BlockedUntil: times[i]})
			}
			recordBlocks(t, s, blocks...)
		},
		remaining: func(t *testing.T, s store.Store) []int {
			blocks := activeBlocks(t, s, base().Add(-24*time.Hour), 100)
			out := make([]int, len(blocks))
			for i, b := range blocks {
				out[i] = atoi(t, b.Identifier)
			}
			return out
		},
		del: store.Store.DeleteAuthBlocksBefore,
	},
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("row number %q: %v", s, err)
	}
	return n
}

func testRetentionDeletes(t *testing.T, s store.Store) {
	// Rows 0..9 are one minute apart and inserted newest first, so that
	// insertion order is not age order. The cutoff is row 6's time exactly:
	// rows 0..5 are older, row 6 is not.
	times := make([]time.Time, 10)
	order := make([]int, len(times))
	for i := range times {
		times[i] = base().Add(time.Duration(i) * time.Minute)
		order[i] = len(times) - 1 - i
	}
	cutoff := times[6]
	steps := []struct {
		limit     int
		deleted   int64
		remaining []int
	}{
		{limit: 4, deleted: 4, remaining: []int{4, 5, 6, 7, 8, 9}},
		{limit: 4, deleted: 2, remaining: []int{6, 7, 8, 9}},
		{limit: 4, deleted: 0, remaining: []int{6, 7, 8, 9}},
	}
	for _, k := range retentionKinds {
		t.Run(k.name, func(t *testing.T) {
			k.insert(t, s, times, order)
			if _, err := k.del(s, t.Context(), cutoff, 0); err == nil {
				t.Errorf("%s with limit 0: no error", k.name)
			}
			for i, step := range steps {
				n, err := k.del(s, t.Context(), cutoff, step.limit)
				if err != nil {
					t.Fatalf("step %d: %s: %v", i, k.name, err)
				}
				if n != step.deleted {
					t.Errorf("step %d: %s deleted %d, want %d", i, k.name, n, step.deleted)
				}
				got := k.remaining(t, s)
				slices.Sort(got)
				diff(t, "remaining rows after step "+strconv.Itoa(i), step.remaining, got)
			}
		})
	}
}
