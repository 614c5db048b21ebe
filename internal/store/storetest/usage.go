package storetest

import (
	"cmp"
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
	// A conflict deep inside a large batch writes none of the batch (the
	// totals below would count its rows).
	batch := usageRows(70, projects, tokens)
	batch[66].ID = rows[3].ID
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
