package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func testAuditEventRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	full := store.AuditEvent{
		ID:        uuid.NewString(),
		CreatedAt: base(),
		Actor:     "management",
		Action:    "token.create",
		Outcome:   store.OutcomeSuccess,
		ProjectID: uuid.NewString(),
		TokenID:   uuid.NewString(),
		RequestID: "req-1",
		ClientIP:  "203.0.113.7",
		Method:    "POST",
		Path:      "/manage/tokens",
		Reason:    "",
		// JSON round trip: numbers come back as float64, arrays as []any.
		Metadata: map[string]any{
			"label":   "ci \"bot\" ✓",
			"count":   float64(3),
			"ratio":   0.25,
			"enabled": true,
			"none":    nil,
			"nested":  map[string]any{"models": []any{"gpt-4o", float64(1)}},
		},
	}
	bare := store.AuditEvent{
		ID:        uuid.NewString(),
		CreatedAt: base().Add(time.Second),
		Actor:     "anonymous",
		Action:    "auth.failure",
		Outcome:   store.OutcomeDenied,
		Reason:    "unknown token",
	}
	if err := s.InsertAuditEvents(ctx, nil); err != nil {
		t.Fatalf("InsertAuditEvents(nil): %v", err)
	}
	if err := s.InsertAuditEvents(ctx, []store.AuditEvent{full, bare}); err != nil {
		t.Fatalf("InsertAuditEvents: %v", err)
	}
	for _, want := range []store.AuditEvent{full, bare} {
		got, err := s.GetAuditEvent(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetAuditEvent(%s): %v", want.Action, err)
		}
		requireUTC(t, got)
		diff(t, "GetAuditEvent "+want.Action, &want, got, cmpopts.EquateEmpty())
	}

	_, err := s.GetAuditEvent(ctx, uuid.NewString())
	requireErr(t, "GetAuditEvent missing", err, store.ErrNotFound)
	_, err = s.GetAuditEvent(ctx, "not-a-uuid")
	requireErr(t, "GetAuditEvent malformed", err, store.ErrNotFound)
	requireErr(t, "InsertAuditEvents duplicate id", s.InsertAuditEvents(ctx, []store.AuditEvent{bare}), store.ErrConflict)
}

func testListAuditEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	projects := []string{uuid.NewString(), uuid.NewString()}
	tokens := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	actions := []string{"project.create", "token.create", "auth.failure"}
	outcomes := []string{store.OutcomeSuccess, store.OutcomeFailure, store.OutcomeDenied, store.OutcomeError}

	// Insert in shuffled time order so "newest first" is the store's doing.
	const n = 200
	events := make([]store.AuditEvent, n)
	for i := range events {
		j := (i * 7) % n
		e := store.AuditEvent{
			ID:        uuid.NewString(),
			CreatedAt: base().Add(time.Duration(j) * time.Second),
			Actor:     "management",
			Action:    actions[j%len(actions)],
			Outcome:   outcomes[j%len(outcomes)],
			Metadata:  map[string]any{"i": float64(j)},
		}
		if j%5 != 0 {
			e.ProjectID = projects[j%len(projects)]
		}
		if j%4 != 0 {
			e.TokenID = tokens[j%len(tokens)]
		}
		events[i] = e
	}
	if err := s.InsertAuditEvents(ctx, events[:80]); err != nil {
		t.Fatalf("InsertAuditEvents: %v", err)
	}
	if err := s.InsertAuditEvents(ctx, events[80:]); err != nil {
		t.Fatalf("InsertAuditEvents: %v", err)
	}
	byID := map[string]store.AuditEvent{}
	for _, e := range events {
		byID[e.ID] = e
	}

	// expect returns the IDs matching f, newest first.
	expect := func(f store.AuditFilter) []string {
		var match []store.AuditEvent
		for _, e := range events {
			if (f.Action == "" || e.Action == f.Action) &&
				(f.Outcome == "" || e.Outcome == f.Outcome) &&
				(f.ProjectID == "" || e.ProjectID == f.ProjectID) &&
				(f.TokenID == "" || e.TokenID == f.TokenID) &&
				(f.From.IsZero() || !e.CreatedAt.Before(f.From)) &&
				(f.To.IsZero() || e.CreatedAt.Before(f.To)) {
				match = append(match, e)
			}
		}
		slices.SortFunc(match, func(a, b store.AuditEvent) int { return b.CreatedAt.Compare(a.CreatedAt) })
		out := make([]string, len(match))
		for i, e := range match {
			out[i] = e.ID
		}
		return out
	}
	from, to := base().Add(100*time.Second), base().Add(400*time.Second)
	eventID := func(e *store.AuditEvent) string { return e.ID }

	tests := []struct {
		name string
		f    store.AuditFilter
	}{
		{"all", store.AuditFilter{}},
		{"action", store.AuditFilter{Action: "token.create"}},
		{"outcome", store.AuditFilter{Outcome: store.OutcomeDenied}},
		{"project", store.AuditFilter{ProjectID: projects[1]}},
		{"token", store.AuditFilter{TokenID: tokens[2]}},
		{"from inclusive to exclusive", store.AuditFilter{From: from, To: to}},
		{"from only", store.AuditFilter{From: from}},
		{"to only", store.AuditFilter{To: to}},
		{"combined", store.AuditFilter{Action: "auth.failure", ProjectID: projects[0], From: from}},
		{"nothing", store.AuditFilter{Action: "no.such.action"}},
	}
	for _, tc := range tests {
		want := expect(tc.f)
		tc.f.Page = store.Page{Page: 1, PageSize: 1000}
		got, total, err := s.ListAuditEvents(ctx, tc.f)
		if err != nil {
			t.Fatalf("ListAuditEvents %s: %v", tc.name, err)
		}
		if total != len(want) {
			t.Errorf("ListAuditEvents %s: total %d, want %d", tc.name, total, len(want))
		}
		diff(t, "ListAuditEvents "+tc.name+" ids, newest first", want, ids(got, eventID), cmpopts.EquateEmpty())
		for _, e := range got {
			requireUTC(t, e)
			w := byID[e.ID]
			diff(t, "listed audit event", &w, e)
		}
	}

	// Pages of 7 over the action filter concatenate to the full list.
	f := store.AuditFilter{Action: "project.create"}
	want := expect(f)
	var paged []string
	for page := 1; ; page++ {
		f.Page = store.Page{Page: page, PageSize: 7}
		got, total, err := s.ListAuditEvents(ctx, f)
		if err != nil {
			t.Fatalf("ListAuditEvents page %d: %v", page, err)
		}
		if total != len(want) {
			t.Errorf("ListAuditEvents page %d: total %d, want %d", page, total, len(want))
		}
		if len(got) == 0 || page > len(want) {
			break
		}
		if len(got) > 7 {
			t.Fatalf("ListAuditEvents page %d: %d records, page size 7", page, len(got))
		}
		paged = append(paged, ids(got, eventID)...)
	}
	diff(t, "ids over all pages", want, paged)
}
