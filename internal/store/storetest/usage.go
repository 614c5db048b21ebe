package storetest

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// usageRows builds n rows seven minutes apart starting 20:00 UTC, so days
// in UTC and in zone (where the rows are expressed) differ. Every 11th row
// has no project and every 7th no token, to exercise NULL IDs.
func usageRows(n int, projects, tokens []string) []store.Usage {
	start := time.Date(2025, 3, 10, 20, 0, 0, 1000, time.UTC)
	models := []string{"gpt-4o", "claude-sonnet", "gpt-4o-mini"}
	rows := make([]store.Usage, n)
	for i := range rows {
		u := store.Usage{
			ID:               uuid.NewString(),
			CreatedAt:        start.Add(time.Duration(i) * 7 * time.Minute).In(zone),
			RequestID:        "req-" + uuid.NewString(),
			Model:            models[i%len(models)],
			Endpoint:         "/v1/chat/completions",
			Status:           200,
			PromptTokens:     i % 50,
			CompletionTokens: i % 30,
			TotalTokens:      i%50 + i%30,
			Latency:          time.Duration(i) * time.Millisecond,
			TTFB:             time.Duration(i/2) * time.Millisecond,
			Streamed:         i%2 == 0,
			Cached:           i%5 == 0,
		}
		if i%11 != 0 {
			u.ProjectID = projects[i%len(projects)]
		}
		if i%7 != 0 {
			u.TokenID = tokens[i%len(tokens)]
		}
		if i%13 == 0 {
			u.AgentTokenID = uuid.NewString()
			u.UserID = "user@example.com"
		}
		if i%17 == 0 {
			u.Status = 429
		}
		if i%19 == 0 {
			u.Purpose = store.PurposeMemory
		}
		rows[i] = u
	}
	return rows
}

// expectUsage aggregates rows the way SumUsage must.
func expectUsage(rows []store.Usage, f store.UsageFilter) []store.UsageTotal {
	groups := map[string]*store.UsageTotal{}
	for _, u := range rows {
		if (f.ProjectID != "" && u.ProjectID != f.ProjectID) ||
			(f.TokenID != "" && u.TokenID != f.TokenID) ||
			(!f.From.IsZero() && u.CreatedAt.Before(f.From)) ||
			(!f.To.IsZero() && !u.CreatedAt.Before(f.To)) {
			continue
		}
		var key string
		switch f.GroupBy {
		case store.GroupByDay:
			key = u.CreatedAt.UTC().Format(time.DateOnly)
		case store.GroupByModel:
			key = u.Model
		case store.GroupByToken:
			key = u.TokenID
		case store.GroupByCache:
			key = "miss"
			if u.Cached {
				key = "hit"
			}
		case store.GroupByPurpose:
			key = cmp.Or(u.Purpose, store.PurposeClient)
		}
		g := groups[key]
		if g == nil {
			g = &store.UsageTotal{Key: key}
			groups[key] = g
		}
		g.Requests++
		g.PromptTokens += int64(u.PromptTokens)
		g.CompletionTokens += int64(u.CompletionTokens)
		g.TotalTokens += int64(u.TotalTokens)
	}
	if f.GroupBy == "" && len(groups) == 0 {
		return []store.UsageTotal{{}}
	}
	out := make([]store.UsageTotal, 0, len(groups))
	for _, g := range groups {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b store.UsageTotal) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func testSumUsage(t *testing.T, s store.Store) {
	ctx := t.Context()
	projects := []string{uuid.NewString(), uuid.NewString()}
	tokens := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	rows := usageRows(1000, projects, tokens)
	if err := s.InsertUsage(ctx, nil); err != nil {
		t.Fatalf("InsertUsage(nil): %v", err)
	}
	if err := s.InsertUsage(ctx, rows[:1]); err != nil {
		t.Fatalf("InsertUsage one row: %v", err)
	}
	if err := s.InsertUsage(ctx, rows[1:]); err != nil {
		t.Fatalf("InsertUsage batch: %v", err)
	}
	requireErr(t, "InsertUsage duplicate id", s.InsertUsage(ctx, rows[5:6]), store.ErrConflict)
	// A row already stored deep inside a large batch (a retried batch)
	// writes none of the batch (the totals below would count its rows).
	batch := usageRows(70, projects, tokens)
	batch[66] = rows[3]
	requireErr(t, "InsertUsage batch with a duplicate id", s.InsertUsage(ctx, batch), store.ErrConflict)

	from, to := rows[100].CreatedAt, rows[900].CreatedAt
	tests := []struct {
		name string
		f    store.UsageFilter
	}{
		{"total", store.UsageFilter{}},
		{"project", store.UsageFilter{ProjectID: projects[0]}},
		{"token", store.UsageFilter{TokenID: tokens[1]}},
		{"project and token", store.UsageFilter{ProjectID: projects[1], TokenID: tokens[2]}},
		{"from inclusive to exclusive", store.UsageFilter{From: from, To: to}},
		{"from only", store.UsageFilter{From: from}},
		{"to only", store.UsageFilter{To: to}},
		{"by day", store.UsageFilter{GroupBy: store.GroupByDay}},
		{"by model", store.UsageFilter{GroupBy: store.GroupByModel}},
		{"by token (rows without a token under \"\")", store.UsageFilter{GroupBy: store.GroupByToken}},
		{"project by day in range", store.UsageFilter{ProjectID: projects[0], From: from, To: to, GroupBy: store.GroupByDay}},
		{"token by model", store.UsageFilter{TokenID: tokens[0], GroupBy: store.GroupByModel}},
		{"by cache", store.UsageFilter{GroupBy: store.GroupByCache}},
		{"project by cache", store.UsageFilter{ProjectID: projects[1], GroupBy: store.GroupByCache}},
		{"by purpose (client unless set)", store.UsageFilter{GroupBy: store.GroupByPurpose}},
		{"nothing matches, one zero total", store.UsageFilter{ProjectID: uuid.NewString()}},
		{"nothing matches, no groups", store.UsageFilter{ProjectID: uuid.NewString(), GroupBy: store.GroupByModel}},
		{"empty range", store.UsageFilter{From: from, To: from}},
	}
	for _, tc := range tests {
		got, err := s.SumUsage(ctx, tc.f)
		if err != nil {
			t.Errorf("SumUsage %s: %v", tc.name, err)
			continue
		}
		slices.SortFunc(got, func(a, b store.UsageTotal) int { return strings.Compare(a.Key, b.Key) })
		diff(t, "SumUsage "+tc.name, expectUsage(rows, tc.f), got, cmpopts.EquateEmpty())
	}
}

// testRollupExact checks that SumUsage, which reads the roll-up for whole
// hours and days and raw rows for the ragged edges, answers exactly what
// the raw rows add up to: random rows over four days, random windows
// (whole days, whole hours, to the microsecond, open), every grouping and
// filter, after retried batches and after a batched retention delete with
// a cutoff in the middle of an hour.
func testRollupExact(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := rand.New(rand.NewPCG(7, 13))
	projects := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	tokens := []string{uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()}
	models := []string{"gpt-4o", "gpt-4o-mini", "claude-sonnet"}
	start := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	const span = 4 * 24 * time.Hour
	rows := make([]store.Usage, 2000)
	for i := range rows {
		u := store.Usage{
			ID:               uuid.NewString(),
			CreatedAt:        start.Add(time.Duration(r.Int64N(int64(span)))).Truncate(time.Microsecond).In(zone),
			RequestID:        "req",
			Model:            models[r.IntN(len(models))],
			Endpoint:         "/v1/chat/completions",
			Status:           200,
			PromptTokens:     r.IntN(1000),
			CompletionTokens: r.IntN(500),
			Cached:           r.IntN(4) == 0,
			Purpose:          []string{"", store.PurposeClient, store.PurposeMemory}[r.IntN(3)],
		}
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		if r.IntN(10) > 0 {
			u.ProjectID = projects[r.IntN(len(projects))]
		}
		switch r.IntN(5) {
		case 0:
			u.AgentTokenID = uuid.NewString()[:8] + "-0000-4000-8000-000000000000"
		case 1:
		default:
			u.TokenID = tokens[r.IntN(len(tokens))]
		}
		rows[i] = u
	}
	for i := 0; i < len(rows); {
		n := min(1+r.IntN(300), len(rows)-i)
		batch := rows[i : i+n]
		if err := s.InsertUsage(ctx, batch); err != nil {
			t.Fatalf("InsertUsage: %v", err)
		}
		if r.IntN(3) == 0 {
			// A retried batch (its first attempt committed, the writer
			// did not hear so) must not count twice.
			requireErr(t, "InsertUsage retried batch", s.InsertUsage(ctx, batch), store.ErrConflict)
		}
		i += n
	}

	check := func(t *testing.T, rows []store.Usage) {
		t.Helper()
		groups := []string{"", store.GroupByDay, store.GroupByModel, store.GroupByToken, store.GroupByCache,
			store.GroupByPurpose}
		edge := func() time.Time {
			at := start.Add(time.Duration(r.Int64N(int64(span + 2*time.Hour)))).Add(-time.Hour)
			switch r.IntN(5) {
			case 0:
				return time.Time{}
			case 1:
				return at.Truncate(24 * time.Hour)
			case 2:
				return at.Truncate(time.Hour)
			}
			return at.Truncate(time.Microsecond)
		}
		for i := range 150 {
			f := store.UsageFilter{From: edge(), To: edge(), GroupBy: groups[i%len(groups)]}
			if !f.From.IsZero() && !f.To.IsZero() && f.To.Before(f.From) {
				f.From, f.To = f.To, f.From
			}
			switch r.IntN(4) {
			case 0:
				f.ProjectID = projects[r.IntN(len(projects))]
			case 1:
				f.TokenID = tokens[r.IntN(len(tokens))]
			}
			got, err := s.SumUsage(ctx, f)
			if err != nil {
				t.Fatalf("SumUsage(%+v): %v", f, err)
			}
			diff(t, fmt.Sprintf("SumUsage(%+v)", f), expectUsage(rows, f), got, cmpopts.EquateEmpty())
		}
	}
	check(t, rows)

	cutoff := start.Add(36*time.Hour + 17*time.Minute + 3*time.Second)
	for {
		n, err := s.DeleteUsageBefore(ctx, cutoff, 97)
		if err != nil {
			t.Fatalf("DeleteUsageBefore: %v", err)
		}
		if n == 0 {
			break
		}
	}
	var kept []store.Usage
	for _, u := range rows {
		if !u.CreatedAt.Before(cutoff) {
			kept = append(kept, u)
		}
	}
	check(t, kept)
}
