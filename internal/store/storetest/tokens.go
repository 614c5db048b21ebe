package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func testTokenRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	unlimited := mustCreateToken(t, s, newToken(p.ID))
	limited := newToken(p.ID)
	limited.MaxRequests = ptr(int64(5))
	limited.Label = ""
	limited.RPMLimit, limited.TPMLimit = 0, 0
	limited.AllowedModels = []string{"gpt-4o-mini"}
	mustCreateToken(t, s, limited)

	for _, want := range []*store.Token{unlimited, limited} {
		diff(t, "GetToken", want, mustGetToken(t, s, want.ID))
	}

	// Nullable fields become non-nil through ConsumeToken and UpdateToken.
	usedAt := base().Add(time.Minute)
	if _, err := s.ConsumeToken(ctx, limited.ID, usedAt); err != nil {
		t.Fatalf("ConsumeToken: %v", err)
	}
	upd := *limited
	upd.IsActive = false
	upd.DeactivatedAt = ptr(base().Add(2 * time.Minute))
	if err := s.UpdateToken(ctx, &upd); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	want := upd
	want.RequestCount = 1
	want.LastUsedAt = &usedAt
	diff(t, "token after use and deactivation", &want, mustGetToken(t, s, limited.ID))
}

// testTokenAndProjectByHash checks the one-query lookup of authentication:
// each token comes with its own project, every field of both (nullable ones
// set and unset) as stored, in UTC.
func testTokenAndProjectByHash(t *testing.T, s store.Store) {
	ctx := t.Context()
	plain := mustCreateProject(t, s, newProject("plain"))
	rich := newProject("rich")
	rich.APIVersion = "2024-06-01"
	rich.AllowedOrigins = []string{"https://app.example"}
	rich.AllowedModels = []string{"gpt-4o-mini", "gpt-4o"}
	rich.CacheTTLSeconds = 300
	rich.IsActive = false
	rich.DeactivatedAt = ptr(base().Add(time.Hour))
	mustCreateProject(t, s, rich)

	used := newToken(rich.ID)
	used.MaxRequests = ptr(int64(7))
	used.RequestCount = 3
	used.AllowedModels = []string{"gpt-4o"}
	used.IsActive = false
	used.DeactivatedAt = ptr(base().Add(2 * time.Hour))
	used.LastUsedAt = ptr(base().Add(time.Minute))
	cases := []struct {
		tok  *store.Token
		proj *store.Project
	}{
		{mustCreateToken(t, s, newToken(plain.ID)), plain},
		{mustCreateToken(t, s, newToken(plain.ID)), plain},
		{mustCreateToken(t, s, used), rich},
	}
	for _, tc := range cases {
		tok, proj, err := s.GetTokenAndProjectByHash(ctx, tc.tok.Hash)
		if err != nil {
			t.Fatalf("GetTokenAndProjectByHash(%s): %v", tc.tok.ID, err)
		}
		requireUTC(t, tok)
		requireUTC(t, proj)
		diff(t, "GetTokenAndProjectByHash token", tc.tok, tok)
		diff(t, "GetTokenAndProjectByHash project", tc.proj, proj)
	}
}

func testTokenNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	mustCreateToken(t, s, newToken(p.ID))
	missing := newToken(p.ID)
	malformed := newToken(p.ID)
	malformed.ID = "not-a-uuid"

	tests := []struct {
		name string
		call func() error
	}{
		{"GetToken missing", func() error { _, err := s.GetToken(ctx, uuid.NewString()); return err }},
		{"GetToken malformed", func() error { _, err := s.GetToken(ctx, "not-a-uuid"); return err }},
		{"GetTokenAndProjectByHash missing", func() error { _, _, err := s.GetTokenAndProjectByHash(ctx, missing.Hash); return err }},
		{"UpdateToken missing", func() error { return s.UpdateToken(ctx, missing) }},
		{"UpdateToken malformed", func() error { return s.UpdateToken(ctx, malformed) }},
		{"ConsumeToken missing", func() error { _, err := s.ConsumeToken(ctx, uuid.NewString(), base()); return err }},
		{"ConsumeToken malformed", func() error { _, err := s.ConsumeToken(ctx, "not-a-uuid", base()); return err }},
	}
	for _, tc := range tests {
		requireErr(t, tc.name, tc.call(), store.ErrNotFound)
	}
}

func testTokenConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	existing := mustCreateToken(t, s, newToken(p.ID))

	requireErr(t, "CreateToken unknown project", s.CreateToken(ctx, newToken(uuid.NewString())), store.ErrConflict)

	dupHash := newToken(p.ID)
	dupHash.Hash = existing.Hash
	requireErr(t, "CreateToken duplicate hash", s.CreateToken(ctx, dupHash), store.ErrConflict)

	dupID := newToken(p.ID)
	dupID.ID = existing.ID
	requireErr(t, "CreateToken duplicate id", s.CreateToken(ctx, dupID), store.ErrConflict)

	got, total, err := s.ListTokens(ctx, store.TokenFilter{Page: store.Page{Page: 1, PageSize: 10}})
	if err != nil {
		t.Fatalf("ListTokens: %v", err)
	}
	if total != 1 || len(got) != 1 {
		t.Errorf("ListTokens after refused inserts: %d records, total %d; want 1, 1", len(got), total)
	}
}

func testUpdateToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	orig := mustCreateToken(t, s, newToken(p.ID))
	for range 2 {
		if _, err := s.ConsumeToken(ctx, orig.ID, base()); err != nil {
			t.Fatalf("ConsumeToken: %v", err)
		}
	}

	// upd is a stale copy (RequestCount 0, LastUsedAt nil): UpdateToken must
	// not write the request count or last use back.
	upd := *orig
	upd.Label = "renamed"
	upd.IsActive = false
	upd.DeactivatedAt = ptr(base().Add(time.Hour))
	upd.MaxRequests = ptr(int64(10))
	upd.RPMLimit = 1
	upd.TPMLimit = 2
	upd.AllowedModels = []string{"gpt-4o-mini", "gpt-4.1-*"}
	if err := s.UpdateToken(ctx, &upd); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	want := upd
	want.RequestCount = 2
	want.LastUsedAt = ptr(base())
	diff(t, "updated token", &want, mustGetToken(t, s, orig.ID))

	// A stale copy that still says active (read before a revoke) must not
	// undo the revoke; max_requests may still be cleared.
	upd.MaxRequests = nil
	upd.AllowedModels = nil
	upd.IsActive = true
	upd.DeactivatedAt = nil
	if err := s.UpdateToken(ctx, &upd); err != nil {
		t.Fatalf("UpdateToken clear: %v", err)
	}
	want.MaxRequests = nil
	want.AllowedModels = nil
	diff(t, "token after clearing max_requests and trying to reactivate", &want, mustGetToken(t, s, orig.ID))
}

func testListTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustCreateProject(t, s, newProject("a"))
	b := mustCreateProject(t, s, newProject("b"))
	all := map[string]*store.Token{}
	var aActive, aInactive, bActive []string
	add := func(projectID string, active bool, i int) string {
		tok := newToken(projectID)
		tok.CreatedAt = base().Add(time.Duration(i) * time.Second)
		if !active {
			tok.IsActive = false
			tok.DeactivatedAt = ptr(base())
		}
		mustCreateToken(t, s, tok)
		all[tok.ID] = tok
		return tok.ID
	}
	for i := range 4 {
		aActive = append(aActive, add(a.ID, true, i))
	}
	for i := range 2 {
		aInactive = append(aInactive, add(a.ID, false, 10+i))
	}
	for i := range 3 {
		bActive = append(bActive, add(b.ID, true, 20+i))
	}
	tokenID := func(tok *store.Token) string { return tok.ID }

	tests := []struct {
		name      string
		projectID string
		active    *bool
		want      []string
	}{
		{"all", "", nil, slices.Concat(aActive, aInactive, bActive)},
		{"project a", a.ID, nil, slices.Concat(aActive, aInactive)},
		{"project a active", a.ID, ptr(true), aActive},
		{"project a inactive", a.ID, ptr(false), aInactive},
		{"project b inactive", b.ID, ptr(false), nil},
		{"inactive", "", ptr(false), aInactive},
		{"active", "", ptr(true), slices.Concat(aActive, bActive)},
		{"unknown project", uuid.NewString(), nil, nil},
	}
	for _, tc := range tests {
		got, total, err := s.ListTokens(ctx, store.TokenFilter{ProjectID: tc.projectID, Active: tc.active, Page: store.Page{Page: 1, PageSize: 50}})
		if err != nil {
			t.Fatalf("ListTokens %s: %v", tc.name, err)
		}
		if total != len(tc.want) {
			t.Errorf("ListTokens %s: total %d, want %d", tc.name, total, len(tc.want))
		}
		diff(t, "ListTokens "+tc.name+" ids", sorted(tc.want), sorted(ids(got, tokenID)), cmpopts.EquateEmpty())
		for _, tok := range got {
			requireUTC(t, tok)
			diff(t, "listed token", all[tok.ID], tok)
		}
	}

	var paged []string
	for page, wantLen := range []int{4, 2, 0} {
		got, total, err := s.ListTokens(ctx, store.TokenFilter{ProjectID: a.ID, Page: store.Page{Page: page + 1, PageSize: 4}})
		if err != nil {
			t.Fatalf("ListTokens page %d: %v", page+1, err)
		}
		if len(got) != wantLen || total != 6 {
			t.Errorf("ListTokens page %d: %d records, total %d; want %d, 6", page+1, len(got), total, wantLen)
		}
		paged = append(paged, ids(got, tokenID)...)
	}
	diff(t, "ids over all pages", sorted(slices.Concat(aActive, aInactive)), sorted(paged))
}

func testDeactivateProjectTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustCreateProject(t, s, newProject("a"))
	b := mustCreateProject(t, s, newProject("b"))
	var aTokens []*store.Token
	for range 3 {
		aTokens = append(aTokens, mustCreateToken(t, s, newToken(a.ID)))
	}
	earlier := newToken(a.ID)
	earlier.IsActive = false
	earlier.DeactivatedAt = ptr(base().Add(-time.Hour))
	mustCreateToken(t, s, earlier)
	bToken := mustCreateToken(t, s, newToken(b.ID))

	at := base().Add(time.Hour)
	n, err := s.DeactivateProjectTokens(ctx, a.ID, at)
	if err != nil {
		t.Fatalf("DeactivateProjectTokens: %v", err)
	}
	if n != 3 {
		t.Errorf("DeactivateProjectTokens = %d, want 3", n)
	}
	for _, tok := range aTokens {
		want := *tok
		want.IsActive = false
		want.DeactivatedAt = &at
		diff(t, "deactivated token", &want, mustGetToken(t, s, tok.ID))
	}
	diff(t, "already inactive token", earlier, mustGetToken(t, s, earlier.ID))
	diff(t, "other project's token", bToken, mustGetToken(t, s, bToken.ID))

	n, err = s.DeactivateProjectTokens(ctx, a.ID, at.Add(time.Hour))
	if err != nil || n != 0 {
		t.Errorf("DeactivateProjectTokens again = %d, %v; want 0, nil", n, err)
	}
	n, err = s.DeactivateProjectTokens(ctx, uuid.NewString(), at)
	if err != nil || n != 0 {
		t.Errorf("DeactivateProjectTokens unknown project = %d, %v; want 0, nil", n, err)
	}
}

func testConsumeToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	limited := newToken(p.ID)
	limited.MaxRequests = ptr(int64(3))
	mustCreateToken(t, s, limited)
	unlimited := mustCreateToken(t, s, newToken(p.ID))

	var lastOK time.Time
	for i := range 5 {
		at := base().Add(time.Duration(i) * time.Second)
		n, err := s.ConsumeToken(ctx, limited.ID, at)
		switch {
		case i < 3:
			if err != nil || n != int64(i+1) {
				t.Errorf("ConsumeToken #%d = %d, %v; want %d, nil", i+1, n, err, i+1)
			}
			lastOK = at
		default:
			requireErr(t, fmt.Sprintf("ConsumeToken #%d over quota", i+1), err, store.ErrQuotaExceeded)
		}
	}
	got := mustGetToken(t, s, limited.ID)
	if got.RequestCount != 3 {
		t.Errorf("RequestCount after exhausting = %d, want 3", got.RequestCount)
	}
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(lastOK) {
		t.Errorf("LastUsedAt = %v, want %v (refused requests do not count as use)", got.LastUsedAt, lastOK)
	}

	for i := range 20 {
		n, err := s.ConsumeToken(ctx, unlimited.ID, base())
		if err != nil || n != int64(i+1) {
			t.Fatalf("ConsumeToken unlimited #%d = %d, %v; want %d, nil", i+1, n, err, i+1)
		}
	}
	if got := mustGetToken(t, s, unlimited.ID); got.RequestCount != 20 {
		t.Errorf("unlimited RequestCount = %d, want 20", got.RequestCount)
	}
}

func testConsumeTokenConcurrent(t *testing.T, s store.Store) {
	const (
		maxRequests = 100
		workers     = 64
	)
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	tok := newToken(p.ID)
	tok.MaxRequests = ptr(int64(maxRequests))
	mustCreateToken(t, s, tok)

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts []int64
		errs   []error
	)
	for range workers {
		wg.Go(func() {
			for {
				n, err := s.ConsumeToken(ctx, tok.ID, base())
				mu.Lock()
				if err == nil {
					counts = append(counts, n)
				} else if !errors.Is(err, store.ErrQuotaExceeded) {
					errs = append(errs, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("ConsumeToken under contention: %v", err)
	}
	slices.Sort(counts)
	want := make([]int64, maxRequests)
	for i := range want {
		want[i] = int64(i + 1)
	}
	diff(t, "returned counts", want, counts)
	if got := mustGetToken(t, s, tok.ID); got.RequestCount != maxRequests {
		t.Errorf("RequestCount = %d, want %d", got.RequestCount, maxRequests)
	}
}

func testReserveRequests(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	limited := newToken(p.ID)
	limited.MaxRequests = ptr(int64(10))
	limited.RequestCount = 1
	mustCreateToken(t, s, limited)
	unlimited := mustCreateToken(t, s, newToken(p.ID))

	steps := []struct {
		name              string
		id                string
		n, granted, count int64
		lowerMax          int64 // > 0: set max_requests to it first
	}{
		{name: "a block", id: limited.ID, n: 4, granted: 4, count: 5},
		{name: "another block", id: limited.ID, n: 4, granted: 4, count: 9},
		{name: "the last partial block", id: limited.ID, n: 4, granted: 1, count: 10},
		{name: "used up", id: limited.ID, n: 4, granted: 0, count: 10},
		{name: "n = 0 reads the count", id: limited.ID, n: 0, granted: 0, count: 10},
		{name: "max_requests lowered below the count", id: limited.ID, n: 4, granted: 0, count: 10, lowerMax: 6},
		{name: "unlimited", id: unlimited.ID, n: 7, granted: 7, count: 7},
		{name: "unlimited again", id: unlimited.ID, n: 7, granted: 7, count: 14},
	}
	for _, st := range steps {
		if st.lowerMax > 0 {
			tok := mustGetToken(t, s, st.id)
			tok.MaxRequests = ptr(st.lowerMax)
			if err := s.UpdateToken(ctx, tok); err != nil {
				t.Fatalf("UpdateToken: %v", err)
			}
		}
		granted, count, err := s.ReserveRequests(ctx, st.id, st.n)
		if err != nil || granted != st.granted || count != st.count {
			t.Errorf("%s: ReserveRequests(%d) = %d, %d, %v; want %d, %d, nil", st.name, st.n, granted, count, err, st.granted, st.count)
		}
		if got := mustGetToken(t, s, st.id); got.RequestCount != st.count || got.LastUsedAt != nil {
			t.Errorf("%s: request_count %d, last_used_at %v; want %d and untouched", st.name, got.RequestCount, got.LastUsedAt, st.count)
		}
	}

	_, _, err := s.ReserveRequests(ctx, uuid.NewString(), 1)
	requireErr(t, "ReserveRequests missing", err, store.ErrNotFound)
	_, _, err = s.ReserveRequests(ctx, "not-a-uuid", 1)
	requireErr(t, "ReserveRequests malformed", err, store.ErrNotFound)
	if _, _, err := s.ReserveRequests(ctx, unlimited.ID, -1); err == nil {
		t.Errorf("ReserveRequests(-1) succeeded, want an error")
	}
}

// testReserveRequestsConcurrent checks that concurrent reservations never
// grant more than max_requests together, and grant all of it.
func testReserveRequestsConcurrent(t *testing.T, s store.Store) {
	const (
		maxRequests = 100
		workers     = 16
		block       = 7 // does not divide maxRequests: one grant is partial
	)
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	tok := newToken(p.ID)
	tok.MaxRequests = ptr(int64(maxRequests))
	mustCreateToken(t, s, tok)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted int64
		counts  = map[int64]bool{}
	)
	for range workers {
		wg.Go(func() {
			for {
				g, n, err := s.ReserveRequests(ctx, tok.ID, block)
				if err != nil {
					t.Errorf("ReserveRequests under contention: %v", err)
					return
				}
				if g == 0 {
					return
				}
				mu.Lock()
				granted += g
				if counts[n] {
					t.Errorf("two reservations returned count %d", n)
				}
				counts[n] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if granted != maxRequests {
		t.Errorf("granted %d in all, want %d", granted, maxRequests)
	}
	if got := mustGetToken(t, s, tok.ID); got.RequestCount != maxRequests {
		t.Errorf("RequestCount = %d, want %d", got.RequestCount, maxRequests)
	}
}

func testTouchTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	t1 := mustCreateToken(t, s, newToken(p.ID))
	t2 := mustCreateToken(t, s, newToken(p.ID))
	consumed := mustCreateToken(t, s, newToken(p.ID))
	untouched := mustCreateToken(t, s, newToken(p.ID))
	if _, err := s.ConsumeToken(ctx, consumed.ID, base()); err != nil {
		t.Fatalf("ConsumeToken: %v", err)
	}

	if err := s.TouchTokens(ctx, nil); err != nil {
		t.Fatalf("TouchTokens(nil): %v", err)
	}
	at := func(sec int) time.Time { return base().Add(time.Duration(sec) * time.Second) }
	steps := []struct {
		name    string
		touches []store.TokenTouch
		want    map[string]struct {
			count int64
			last  time.Time
		}
	}{
		{
			name: "first use",
			touches: []store.TokenTouch{
				{TokenID: t2.ID, Requests: 3, LastUsedAt: at(10)},
				{TokenID: t1.ID, Requests: 2, LastUsedAt: at(5)},
				{TokenID: consumed.ID, Requests: 4, LastUsedAt: at(20)},
			},
			want: map[string]struct {
				count int64
				last  time.Time
			}{t1.ID: {2, at(5)}, t2.ID: {3, at(10)}, consumed.ID: {5, at(20)}},
		},
		{
			name: "older times never move last_used_at back",
			touches: []store.TokenTouch{
				{TokenID: t1.ID, Requests: 1, LastUsedAt: at(1)},
				{TokenID: t2.ID, Requests: 1, LastUsedAt: at(30)},
			},
			want: map[string]struct {
				count int64
				last  time.Time
			}{t1.ID: {3, at(5)}, t2.ID: {4, at(30)}, consumed.ID: {5, at(20)}},
		},
		{
			// A quota counter gives back the unserved rest of a block.
			name: "negative requests, zero time",
			touches: []store.TokenTouch{
				{TokenID: t1.ID, Requests: -2},
				{TokenID: consumed.ID, Requests: -1, LastUsedAt: at(25)},
			},
			want: map[string]struct {
				count int64
				last  time.Time
			}{t1.ID: {1, at(5)}, t2.ID: {4, at(30)}, consumed.ID: {4, at(25)}},
		},
	}
	for _, step := range steps {
		if err := s.TouchTokens(ctx, step.touches); err != nil {
			t.Fatalf("TouchTokens %s: %v", step.name, err)
		}
		for id, w := range step.want {
			got := mustGetToken(t, s, id)
			if got.RequestCount != w.count || got.LastUsedAt == nil || !got.LastUsedAt.Equal(w.last) {
				t.Errorf("%s: token %s = count %d, last %v; want %d, %v", step.name, id, got.RequestCount, got.LastUsedAt, w.count, w.last)
			}
		}
	}
	diff(t, "untouched token", untouched, mustGetToken(t, s, untouched.ID))

	// A zero LastUsedAt never sets a last_used_at that was NULL.
	if err := s.TouchTokens(ctx, []store.TokenTouch{{TokenID: untouched.ID, Requests: 2}}); err != nil {
		t.Fatalf("TouchTokens without a time: %v", err)
	}
	if got := mustGetToken(t, s, untouched.ID); got.RequestCount != 2 || got.LastUsedAt != nil {
		t.Errorf("touched without a time: count %d, last_used_at %v; want 2, nil", got.RequestCount, got.LastUsedAt)
	}
}

func testTimePrecision(t *testing.T, s store.Store) {
	p := mustCreateProject(t, s, newProject("p"))
	times := []time.Time{
		time.Date(2025, 1, 2, 3, 4, 5, 1000, zone),
		time.Date(2025, 12, 31, 23, 59, 59, 999999000, time.FixedZone("UTC-08", -8*3600)),
		time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2099, 2, 28, 12, 0, 0, 500000000, zone),
		base(),
	}
	for _, ts := range times {
		tok := newToken(p.ID)
		tok.ExpiresAt = ts
		tok.CreatedAt = ts.Add(-time.Microsecond)
		mustCreateToken(t, s, tok)
		got := mustGetToken(t, s, tok.ID)
		if !got.ExpiresAt.Equal(ts) || !got.CreatedAt.Equal(tok.CreatedAt) {
			t.Errorf("times of token = %v, %v; want %v, %v", got.ExpiresAt, got.CreatedAt, ts, tok.CreatedAt)
		}
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers = 50
	ctx := t.Context()
	p := mustCreateProject(t, s, newProject("p"))
	errs := make([]error, 2*writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() { errs[i] = s.CreateToken(ctx, newToken(p.ID)) })
		wg.Go(func() { _, errs[writers+i] = s.GetProject(ctx, p.ID) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent call %d: %v", i, err)
		}
	}
	_, total, err := s.ListTokens(ctx, store.TokenFilter{ProjectID: p.ID, Page: store.Page{Page: 1, PageSize: 10}})
	if err != nil || total != writers {
		t.Errorf("ListTokens total = %d, %v; want %d", total, err, writers)
	}
}
