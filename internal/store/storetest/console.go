package storetest

import (
	"cmp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// expectSeries aggregates rows the way UsageSeries must.
func expectSeries(rows []store.Usage, f store.UsageSeriesFilter) []store.UsagePoint {
	type k struct {
		b   time.Time
		key string
	}
	groups := map[k]*store.UsagePoint{}
	for _, u := range rows {
		if (f.ProjectID != "" && u.ProjectID != f.ProjectID) ||
			(f.TokenID != "" && u.TokenID != f.TokenID) ||
			(!f.From.IsZero() && u.CreatedAt.Before(f.From)) ||
			(!f.To.IsZero() && !u.CreatedAt.Before(f.To)) {
			continue
		}
		var gk k
		gk.b = u.CreatedAt.UTC().Truncate(time.Hour)
		if f.Bucket == store.BucketDay {
			y, m, d := u.CreatedAt.UTC().Date()
			gk.b = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		}
		switch f.Split {
		case store.SplitProject:
			gk.key = u.ProjectID
		case store.SplitModel:
			gk.key = u.Model
		case store.SplitToken:
			gk.key = u.TokenID
		}
		g := groups[gk]
		if g == nil {
			g = &store.UsagePoint{Bucket: gk.b, Key: gk.key}
			groups[gk] = g
		}
		g.Requests++
		g.PromptTokens += int64(u.PromptTokens)
		g.CompletionTokens += int64(u.CompletionTokens)
		g.TotalTokens += int64(u.TotalTokens)
	}
	out := make([]store.UsagePoint, 0, len(groups))
	for _, g := range groups {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b store.UsagePoint) int {
		return cmp.Or(a.Bucket.Compare(b.Bucket), strings.Compare(a.Key, b.Key))
	})
	return out
}

func testUsageSeries(t *testing.T, s store.Store) {
	ctx := t.Context()
	projects := []string{uuid.NewString(), uuid.NewString()}
	tokens := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	rows := usageRows(600, projects, tokens)
	if err := s.InsertUsage(ctx, rows); err != nil {
		t.Fatalf("InsertUsage: %v", err)
	}
	// The rows span 20:00 on 10 March to about 2:00 on 13 March (UTC).
	day := func(d int) time.Time { return time.Date(2025, 3, d, 0, 0, 0, 0, time.UTC) }
	from, to := rows[50].CreatedAt.UTC().Truncate(time.Hour), rows[500].CreatedAt.UTC().Truncate(time.Hour)
	for _, f := range []store.UsageSeriesFilter{
		{Bucket: store.BucketDay, From: day(1), To: day(20)},
		{Bucket: store.BucketHour, From: day(10), To: day(14)},
		{Bucket: store.BucketDay, Split: store.SplitProject, From: day(10), To: day(14)},
		{Bucket: store.BucketDay, Split: store.SplitModel, From: day(11), To: day(12)},
		{Bucket: store.BucketHour, Split: store.SplitToken, From: from, To: to},
		{Bucket: store.BucketDay, Split: store.SplitModel, ProjectID: projects[1], TokenID: tokens[2], From: day(1), To: day(20)},
	} {
		got, err := s.UsageSeries(ctx, f)
		if err != nil {
			t.Fatalf("UsageSeries(%+v): %v", f, err)
		}
		for i := range got {
			requireUTC(t, &got[i])
		}
		diff(t, "UsageSeries", expectSeries(rows, f), got)
	}
	for _, f := range []store.UsageSeriesFilter{
		{Bucket: "week", From: day(1), To: day(20)},
		{Bucket: store.BucketDay, Split: "user", From: day(1), To: day(20)},
		{Bucket: store.BucketDay},
		{Bucket: store.BucketDay, From: day(1).Add(time.Hour), To: day(20)},
		{Bucket: store.BucketHour, From: from, To: to.Add(time.Minute)},
	} {
		if _, err := s.UsageSeries(ctx, f); err == nil {
			t.Errorf("UsageSeries(%+v): want an error", f)
		}
	}
}

func testConsoleSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	a := &store.ConsoleSession{IDHash: "aa", Method: store.SessionMethodToken, Subject: "management", TokenMAC: "mac-a",
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(12 * time.Hour)}
	b := &store.ConsoleSession{IDHash: "bb", Method: store.SessionMethodToken, Subject: "management", TokenMAC: "mac-b",
		CreatedAt: now.Add(-20 * time.Hour), LastSeenAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-8 * time.Hour)}
	c := &store.ConsoleSession{IDHash: "cc", Method: store.SessionMethodToken, Subject: "management", TokenMAC: "mac-c",
		CreatedAt: now.Add(-time.Hour), LastSeenAt: now.Add(-45 * time.Minute), ExpiresAt: now.Add(11 * time.Hour)}
	for _, cs := range []*store.ConsoleSession{a, b, c} {
		if err := s.CreateConsoleSession(ctx, cs); err != nil {
			t.Fatalf("CreateConsoleSession: %v", err)
		}
	}
	requireErr(t, "CreateConsoleSession duplicate", s.CreateConsoleSession(ctx, a), store.ErrConflict)
	got, err := s.GetConsoleSession(ctx, "aa")
	if err != nil {
		t.Fatalf("GetConsoleSession: %v", err)
	}
	requireUTC(t, got)
	diff(t, "GetConsoleSession", utc(*a), *got)
	_, err = s.GetConsoleSession(ctx, "zz")
	requireErr(t, "GetConsoleSession unknown", err, store.ErrNotFound)

	if err := s.TouchConsoleSession(ctx, "aa", now.Add(time.Minute)); err != nil {
		t.Fatalf("TouchConsoleSession: %v", err)
	}
	if err := s.TouchConsoleSession(ctx, "aa", now.Add(-time.Minute)); err != nil {
		t.Fatalf("TouchConsoleSession backwards: %v", err)
	}
	if err := s.TouchConsoleSession(ctx, "zz", now); err != nil {
		t.Fatalf("TouchConsoleSession unknown: %v", err)
	}
	if got, err = s.GetConsoleSession(ctx, "aa"); err != nil || !got.LastSeenAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("after touches: last_seen_at %v, err %v; want %v", got.LastSeenAt, err, now.Add(time.Minute))
	}

	// b has expired, c has been idle 45 minutes (the idle limit is 30).
	n, err := s.DeleteConsoleSessionsBefore(ctx, now, now.Add(-30*time.Minute), 10)
	if err != nil || n != 2 {
		t.Fatalf("DeleteConsoleSessionsBefore = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"bb", "cc"} {
		_, err = s.GetConsoleSession(ctx, id)
		requireErr(t, "GetConsoleSession after purge", err, store.ErrNotFound)
	}
	if err := s.DeleteConsoleSession(ctx, "aa"); err != nil {
		t.Fatalf("DeleteConsoleSession: %v", err)
	}
	if err := s.DeleteConsoleSession(ctx, "aa"); err != nil {
		t.Fatalf("DeleteConsoleSession again: %v", err)
	}
	_, err = s.GetConsoleSession(ctx, "aa")
	requireErr(t, "GetConsoleSession after delete", err, store.ErrNotFound)
}

func utc(s store.ConsoleSession) store.ConsoleSession {
	s.CreatedAt, s.LastSeenAt, s.ExpiresAt = s.CreatedAt.UTC(), s.LastSeenAt.UTC(), s.ExpiresAt.UTC()
	return s
}
