package storetest

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func testProjectDirConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 100
	ids := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			id, err := s.ProjectDir(ctx, "user-a", "/w/app", base())
			if err != nil {
				t.Errorf("ProjectDir: %v", err)
			}
			ids[i] = id
		})
	}
	close(start)
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("concurrent first uses of one root gave %q and %q, want one id", ids[0], id)
		}
	}

	// Many new roots at once still get distinct ids.
	roots := make([]string, 20)
	start = make(chan struct{})
	for i := range roots {
		wg.Go(func() {
			<-start
			id, err := s.ProjectDir(ctx, "user-a", "/w/r"+strconv.Itoa(i), base())
			if err != nil {
				t.Errorf("ProjectDir: %v", err)
			}
			roots[i] = id
		})
	}
	close(start)
	wg.Wait()
	seen := map[string]bool{ids[0]: true}
	for _, id := range roots {
		if seen[id] {
			t.Fatalf("id %q given to two roots", id)
		}
		seen[id] = true
	}

	other, err := s.ProjectDir(ctx, "user-b", "/w/app", base())
	if err != nil || seen[other] {
		t.Fatalf("another user's root = (%q, %v), want a new id", other, err)
	}
	again, err := s.ProjectDir(ctx, "user-a", "/w/app", base().Add(time.Hour))
	if err != nil || again != ids[0] {
		t.Fatalf("known root again = (%q, %v), want %q", again, err, ids[0])
	}

	dirs, total, err := s.ListProjectDirs(ctx, store.ProjectDirFilter{UserID: "user-b", Page: store.Page{Page: 1, PageSize: 10}})
	if err != nil || total != 1 || len(dirs) != 1 {
		t.Fatalf("ListProjectDirs(user-b) = (%d rows, total %d, %v), want 1", len(dirs), total, err)
	}
	requireUTC(t, dirs[0])
	diff(t, "ListProjectDirs", &store.ProjectDir{UserID: "user-b", ProjectRoot: "/w/app", ProjectID: other,
		CreatedAt: base().UTC()}, dirs[0])
	_, total, err = s.ListProjectDirs(ctx, store.ProjectDirFilter{Page: store.Page{Page: 1, PageSize: 5}})
	if err != nil || total != 22 {
		t.Fatalf("ListProjectDirs() total = (%d, %v), want 22", total, err)
	}
}

func memorySession(user, id string, at time.Time) *store.MemorySession {
	return &store.MemorySession{UserID: user, SessionID: id, ProjectID: "proj-1", ProjectRoot: "/w/app",
		UpstreamProjectID: uuid.NewString(), Model: "gpt-4o", Transcript: `[{"role":"user","content":"hi"}]`,
		LastActivity: at, CreatedAt: at}
}

func testMemorySessionLifecycle(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := base()
	sess := memorySession("user-a", "s1", t0)
	sess.Transcript = ""
	created, err := s.StartMemorySession(ctx, sess)
	if err != nil || !created {
		t.Fatalf("StartMemorySession = (%t, %v), want created", created, err)
	}
	created, err = s.StartMemorySession(ctx, sess)
	if err != nil || created {
		t.Fatalf("StartMemorySession again = (%t, %v), want not created", created, err)
	}
	// The same session ID of another user is another session.
	if created, err := s.StartMemorySession(ctx, memorySession("user-b", "s1", t0)); err != nil || !created {
		t.Fatalf("StartMemorySession(user-b) = (%t, %v), want created", created, err)
	}
	claim := store.MemoryClaim{Worker: "w1", IdleBefore: t0.Add(time.Hour), Now: t0.Add(time.Hour),
		LeaseUntil: t0.Add(time.Hour + time.Minute), Limit: 10}
	// user-a's session has no transcript yet: nothing to summarise.
	got, err := s.ClaimMemorySessions(ctx, store.MemoryClaim{Worker: "w1", IdleBefore: t0.Add(time.Hour),
		Now: t0.Add(time.Hour), LeaseUntil: t0.Add(time.Hour + time.Minute), Limit: 10})
	if err != nil || len(got) != 1 || got[0].UserID != "user-b" {
		t.Fatalf("claim = (%d, %v), want user-b's session only", len(got), err)
	}
	if err := s.FailMemorySession(ctx, store.MemoryFailure{Worker: "w1", UserID: "user-b", SessionID: "s1",
		Reason: "x", GiveUp: true}); err != nil {
		t.Fatal(err)
	}

	t1 := t0.Add(time.Minute)
	sess = memorySession("user-a", "s1", t1)
	sess.Transcript = `[{"role":"user","content":"turn 2"}]`
	if err := s.SaveTranscript(ctx, sess); err != nil {
		t.Fatal(err)
	}
	stale := memorySession("user-a", "s1", t0)
	stale.Transcript = "stale"
	if err := s.SaveTranscript(ctx, stale); err != nil {
		t.Fatal(err)
	}
	stored, err := s.GetMemorySession(ctx, "user-a", "s1")
	if err != nil {
		t.Fatal(err)
	}
	requireUTC(t, stored)
	if stored.Transcript != sess.Transcript || !stored.LastActivity.Equal(t1) || !stored.CreatedAt.Equal(t0) ||
		stored.State != store.MemoryActive {
		t.Fatalf("stored session = %+v, want the newer transcript, created at the start", stored)
	}
	_, err = s.GetMemorySession(ctx, "user-c", "s1")
	requireErr(t, "GetMemorySession missing", err, store.ErrNotFound)

	// Not idle long enough: no claim.
	claim.IdleBefore = t1
	if got, err := s.ClaimMemorySessions(ctx, claim); err != nil || len(got) != 0 {
		t.Fatalf("claim of a busy session = (%d, %v), want none", len(got), err)
	}
	claim.IdleBefore = t1.Add(time.Second)
	got, err = s.ClaimMemorySessions(ctx, claim)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim = (%d, %v), want 1", len(got), err)
	}
	if got[0].LockedBy != "w1" || got[0].Attempts != 1 || got[0].Transcript != sess.Transcript {
		t.Fatalf("claimed = %+v", got[0])
	}
	// Leased: another worker gets nothing until the lease ends.
	claim2 := claim
	claim2.Worker = "w2"
	if got, err := s.ClaimMemorySessions(ctx, claim2); err != nil || len(got) != 0 {
		t.Fatalf("claim while leased = (%d, %v), want none", len(got), err)
	}
	claim2.Now = claim.LeaseUntil
	claim2.LeaseUntil = claim.LeaseUntil.Add(time.Minute)
	got2, err := s.ClaimMemorySessions(ctx, claim2)
	if err != nil || len(got2) != 1 || got2[0].Attempts != 2 {
		t.Fatalf("claim after the lease = (%+v, %v), want it re-claimed (attempt 2)", got2, err)
	}

	sum := &store.SessionSummary{ID: uuid.NewString(), UserID: "user-a", ProjectID: "proj-1", ProjectRoot: "/w/app",
		SessionID: "s1", SessionStart: ptr(t0), BackendModel: "gpt-4o", Title: "Fix login", Scope: "auth",
		Goals: "a\nb", KeyDecisions: "c", TouchedFiles: "auth.go", TestsRun: "go test", Errors: "",
		RemainingTasks: "docs", CompletionStatus: "partial", FullAnalysis: `{"title":"Fix login"}`,
		SummaryVersion: 1, CreatedAt: t1.Add(time.Hour)}
	err = s.CompleteMemorySession(ctx, "w1", got[0].LastActivity, sum)
	requireErr(t, "CompleteMemorySession by the worker that lost its lease", err, store.ErrLeaseLost)
	if _, total, _ := s.ListSessionSummaries(ctx, store.SummaryFilter{UserID: "user-a", Page: store.Page{Page: 1, PageSize: 10}}); total != 0 {
		t.Fatalf("a lost lease stored a summary")
	}
	if err := s.CompleteMemorySession(ctx, "w2", got2[0].LastActivity, sum); err != nil {
		t.Fatal(err)
	}
	stored, err = s.GetMemorySession(ctx, "user-a", "s1")
	if err != nil || stored.State != store.MemorySummarized || stored.SummaryVersion != 1 || stored.LockedBy != "" ||
		stored.Attempts != 0 {
		t.Fatalf("after completing = (%+v, %v)", stored, err)
	}
	read, err := s.GetSessionSummary(ctx, sum.ID)
	if err != nil {
		t.Fatal(err)
	}
	requireUTC(t, read)
	diff(t, "GetSessionSummary", sum, read, cmpopts.EquateApproxTime(0))
	// Summarised sessions are not claimed again...
	claim.Now, claim.IdleBefore, claim.LeaseUntil = t1.Add(48*time.Hour), t1.Add(48*time.Hour), t1.Add(49*time.Hour)
	if got, err := s.ClaimMemorySessions(ctx, claim); err != nil || len(got) != 0 {
		t.Fatalf("claim of a summarised session = (%d, %v), want none", len(got), err)
	}
	// ...until the session continues.
	sess.LastActivity = t1.Add(2 * time.Hour)
	if err := s.SaveTranscript(ctx, sess); err != nil {
		t.Fatal(err)
	}
	got, err = s.ClaimMemorySessions(ctx, claim)
	if err != nil || len(got) != 1 || got[0].SummaryVersion != 1 {
		t.Fatalf("claim of a continued session = (%+v, %v)", got, err)
	}
	// Activity while summarising keeps it active after completion.
	if err := s.SaveTranscript(ctx, memorySession("user-a", "s1", t1.Add(3*time.Hour))); err != nil {
		t.Fatal(err)
	}
	v2 := *sum
	v2.ID, v2.SummaryVersion, v2.CreatedAt = uuid.NewString(), 2, sum.CreatedAt.Add(time.Hour)
	if err := s.CompleteMemorySession(ctx, "w1", got[0].LastActivity, &v2); err != nil {
		t.Fatal(err)
	}
	stored, _ = s.GetMemorySession(ctx, "user-a", "s1")
	if stored.State != store.MemoryActive || stored.SummaryVersion != 2 {
		t.Fatalf("after completing a session that moved on: state %q version %d, want active 2", stored.State, stored.SummaryVersion)
	}
	// Upsert by version: storing version 2 again replaces it.
	got, _ = s.ClaimMemorySessions(ctx, claim)
	v2b := v2
	v2b.ID, v2b.Title = uuid.NewString(), "Fix login, again"
	if err := s.CompleteMemorySession(ctx, "w1", got[0].LastActivity, &v2b); err != nil {
		t.Fatal(err)
	}
	list, total, err := s.ListSessionSummaries(ctx, store.SummaryFilter{UserID: "user-a", SessionID: "s1",
		Page: store.Page{Page: 1, PageSize: 10}})
	if err != nil || total != 2 || list[0].Title != "Fix login, again" || list[1].Title != "Fix login" {
		t.Fatalf("summaries = (%d, %v)", total, err)
	}

	n, err := s.DeleteMemorySession(ctx, "user-a", "s1")
	if err != nil || n != 3 {
		t.Fatalf("DeleteMemorySession = (%d, %v), want 3 rows", n, err)
	}
	if _, err := s.GetMemorySession(ctx, "user-b", "s1"); err != nil {
		t.Fatalf("deleting user-a's session touched user-b's: %v", err)
	}
}

func testMemoryFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := base()
	if err := s.SaveTranscript(ctx, memorySession("u", "s", t0)); err != nil {
		t.Fatal(err)
	}
	claim := store.MemoryClaim{Worker: "w", IdleBefore: t0.Add(time.Hour), Now: t0.Add(time.Hour),
		LeaseUntil: t0.Add(2 * time.Hour), Limit: 1}
	if got, _ := s.ClaimMemorySessions(ctx, claim); len(got) != 1 {
		t.Fatal("no claim")
	}
	requireErr(t, "FailMemorySession by another worker", s.FailMemorySession(ctx, store.MemoryFailure{Worker: "x",
		UserID: "u", SessionID: "s", Reason: "r"}), store.ErrLeaseLost)
	retry := t0.Add(3 * time.Hour)
	if err := s.FailMemorySession(ctx, store.MemoryFailure{Worker: "w", UserID: "u", SessionID: "s",
		Reason: "invalid JSON", RetryAt: retry}); err != nil {
		t.Fatal(err)
	}
	// Backing off: not claimed before RetryAt, even with the lease gone.
	claim.Now = retry.Add(-time.Second)
	if got, _ := s.ClaimMemorySessions(ctx, claim); len(got) != 0 {
		t.Fatal("claimed during the back-off")
	}
	claim.Now, claim.LeaseUntil = retry, retry.Add(time.Minute)
	got, err := s.ClaimMemorySessions(ctx, claim)
	if err != nil || len(got) != 1 || got[0].Attempts != 2 || got[0].LastError != "invalid JSON" {
		t.Fatalf("claim after the back-off = (%+v, %v)", got, err)
	}
	if err := s.FailMemorySession(ctx, store.MemoryFailure{Worker: "w", UserID: "u", SessionID: "s",
		Reason: "invalid JSON twice", GiveUp: true}); err != nil {
		t.Fatal(err)
	}
	claim.Now = retry.Add(time.Hour)
	if got, _ := s.ClaimMemorySessions(ctx, claim); len(got) != 0 {
		t.Fatal("claimed after giving up")
	}
	stored, err := s.GetMemorySession(ctx, "u", "s")
	if err != nil || stored.State != store.MemoryFailed || stored.LastError != "invalid JSON twice" || stored.NextAttemptAt != nil {
		t.Fatalf("after giving up = (%+v, %v)", stored, err)
	}
}

func testMemoryClaimConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := base()
	const sessions, workers = 60, 6
	for i := range sessions {
		if err := s.SaveTranscript(ctx, memorySession("u", fmt.Sprint("s", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		claimed = map[string]string{}
	)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			worker := fmt.Sprint("w", w)
			for {
				got, err := s.ClaimMemorySessions(ctx, store.MemoryClaim{Worker: worker, IdleBefore: t0.Add(time.Hour),
					Now: t0.Add(time.Hour), LeaseUntil: t0.Add(2 * time.Hour), Limit: 3})
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, g := range got {
					if prev, ok := claimed[g.SessionID]; ok {
						t.Errorf("session %s claimed by %s and %s", g.SessionID, prev, worker)
					}
					claimed[g.SessionID] = worker
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(claimed) != sessions {
		t.Fatalf("claimed %d sessions, want %d", len(claimed), sessions)
	}
}

func testMemoryRetention(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := base()
	for i := range 5 {
		at := t0.Add(time.Duration(i) * 24 * time.Hour)
		sess := memorySession("u", fmt.Sprint("s", i), at)
		if err := s.SaveTranscript(ctx, sess); err != nil {
			t.Fatal(err)
		}
		got, err := s.ClaimMemorySessions(ctx, store.MemoryClaim{Worker: "w", IdleBefore: at.Add(time.Second),
			Now: at, LeaseUntil: at.Add(time.Minute), Limit: 5})
		if err != nil || len(got) != 1 {
			t.Fatalf("claim %d = (%d, %v)", i, len(got), err)
		}
		if err := s.CompleteMemorySession(ctx, "w", at, &store.SessionSummary{ID: uuid.NewString(), UserID: "u",
			SessionID: sess.SessionID, SummaryVersion: 1, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	cut := t0.Add(3 * 24 * time.Hour)
	if n, err := s.DeleteSummariesBefore(ctx, cut, 2); err != nil || n != 2 {
		t.Fatalf("DeleteSummariesBefore = (%d, %v), want 2 (the limit)", n, err)
	}
	if n, err := s.DeleteSummariesBefore(ctx, cut, 10); err != nil || n != 1 {
		t.Fatalf("DeleteSummariesBefore again = (%d, %v), want 1", n, err)
	}
	if n, err := s.DeleteMemorySessionsBefore(ctx, cut, 10); err != nil || n != 3 {
		t.Fatalf("DeleteMemorySessionsBefore = (%d, %v), want 3", n, err)
	}
	list, total, err := s.ListSessionSummaries(ctx, store.SummaryFilter{Page: store.Page{Page: 1, PageSize: 10}})
	if err != nil || total != 2 || len(list) != 2 {
		t.Fatalf("left = (%d, %v), want 2", total, err)
	}
	requireErr(t, "DeleteSessionSummary missing", s.DeleteSessionSummary(ctx, uuid.NewString()), store.ErrNotFound)
	requireErr(t, "DeleteSessionSummary malformed", s.DeleteSessionSummary(ctx, "x"), store.ErrNotFound)
	if err := s.DeleteSessionSummary(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetSessionSummary(ctx, list[0].ID)
	requireErr(t, "GetSessionSummary deleted", err, store.ErrNotFound)
}
