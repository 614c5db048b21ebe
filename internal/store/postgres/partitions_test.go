package postgres

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// partitions returns the names of table's partitions and how many rows
// each holds.
func partitions(t *testing.T, db *DB, table string) map[string]int64 {
	t.Helper()
	rows, err := db.pool.Query(t.Context(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1)`, table)
	if err != nil {
		t.Fatalf("list partitions: %v", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, n := range names {
		var c int64
		if err := db.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+ident(n)).Scan(&c); err != nil {
			t.Fatal(err)
		}
		out[n] = c
	}
	return out
}

// only2025 keeps the default partitions and those of days in 2025 (the
// migration also created partitions around the real today).
func only2025(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for n, c := range m {
		if n == "usage_default" || n == "audit_events_default" || partitionName.MatchString(n) && n[len(n)-8:len(n)-4] == "2025" {
			out[n] = c
		}
	}
	return out
}

func insertDays(t *testing.T, db *DB, times ...time.Time) {
	t.Helper()
	var (
		rows   []store.Usage
		events []store.AuditEvent
	)
	for _, at := range times {
		rows = append(rows, store.Usage{ID: uuid.NewString(), CreatedAt: at, RequestID: "r", Model: "m",
			Endpoint: "/v1/chat/completions", Status: 200, PromptTokens: 3, TotalTokens: 3})
		events = append(events, store.AuditEvent{ID: uuid.NewString(), CreatedAt: at, Actor: "management",
			Action: "token.create", Outcome: store.OutcomeSuccess})
	}
	if err := db.InsertUsage(t.Context(), rows); err != nil {
		t.Fatalf("InsertUsage: %v", err)
	}
	if err := db.InsertAuditEvents(t.Context(), events); err != nil {
		t.Fatalf("InsertAuditEvents: %v", err)
	}
}

func byDay(t *testing.T, db *DB) []store.UsageTotal {
	t.Helper()
	got, err := db.SumUsage(t.Context(), store.UsageFilter{GroupBy: store.GroupByDay})
	if err != nil {
		t.Fatalf("SumUsage: %v", err)
	}
	return got
}

// TestPartitionsAheadAndDropped: rows of days without a partition land in
// the default partition (an insert never fails), EnsurePartitions creates
// the days asked for and moves those rows into partitions of their own
// days, and DropUsagePartitionsBefore drops whole days only, taking their
// roll-up with them.
func TestPartitionsAheadAndDropped(t *testing.T) {
	t.Parallel()
	db := open(t, Options{URL: migratedURL(t)})
	ctx := t.Context()
	d := func(day, hour int) time.Time { return time.Date(2025, 3, day, hour, 30, 0, 0, time.UTC) }
	insertDays(t, db, d(10, 1), d(10, 23), d(11, 0), d(12, 12))
	want := map[string]int64{"usage_default": 4}
	if diff := cmp.Diff(want, only2025(partitions(t, db, "usage"))); diff != "" {
		t.Fatalf("usage partitions before EnsurePartitions (-want +got):\n%s", diff)
	}

	created, err := db.EnsurePartitions(ctx, d(12, 0), d(14, 0))
	if err != nil {
		t.Fatalf("EnsurePartitions: %v", err)
	}
	// Days 10 and 11 from the default partitions, 12, 13 and 14 (to is
	// 14 00:30, so day 14 overlaps) asked for; in both tables.
	if created != 10 {
		t.Errorf("EnsurePartitions created %d partitions, want 10", created)
	}
	for _, table := range partitionedTables {
		want := map[string]int64{table + "_default": 0, table + "_p20250310": 2, table + "_p20250311": 1,
			table + "_p20250312": 1, table + "_p20250313": 0, table + "_p20250314": 0}
		if diff := cmp.Diff(want, only2025(partitions(t, db, table))); diff != "" {
			t.Errorf("%s partitions after EnsurePartitions (-want +got):\n%s", table, diff)
		}
	}
	if created, err := db.EnsurePartitions(ctx, d(12, 0), d(14, 0)); err != nil || created != 0 {
		t.Errorf("second EnsurePartitions = (%d, %v), want (0, nil)", created, err)
	}
	wantDays := []store.UsageTotal{
		{Key: "2025-03-10", Requests: 2, PromptTokens: 6, TotalTokens: 6},
		{Key: "2025-03-11", Requests: 1, PromptTokens: 3, TotalTokens: 3},
		{Key: "2025-03-12", Requests: 1, PromptTokens: 3, TotalTokens: 3},
	}
	if diff := cmp.Diff(wantDays, byDay(t, db)); diff != "" {
		t.Errorf("usage by day after moving rows (-want +got):\n%s", diff)
	}

	// A cutoff in the middle of day 12 drops days 10 and 11 only.
	n, err := db.DropUsagePartitionsBefore(ctx, d(12, 5))
	if err != nil || n != 3 {
		t.Errorf("DropUsagePartitionsBefore = (%d, %v), want (3, nil)", n, err)
	}
	n, err = db.DropAuditPartitionsBefore(ctx, d(11, 0).Truncate(24*time.Hour))
	if err != nil || n != 2 {
		t.Errorf("DropAuditPartitionsBefore = (%d, %v), want (2, nil)", n, err)
	}
	for table, want := range map[string]map[string]int64{
		"usage":        {"usage_default": 0, "usage_p20250312": 1, "usage_p20250313": 0, "usage_p20250314": 0},
		"audit_events": {"audit_events_default": 0, "audit_events_p20250311": 1, "audit_events_p20250312": 1, "audit_events_p20250313": 0, "audit_events_p20250314": 0},
	} {
		if diff := cmp.Diff(want, only2025(partitions(t, db, table))); diff != "" {
			t.Errorf("%s partitions after the drop (-want +got):\n%s", table, diff)
		}
	}
	if diff := cmp.Diff(wantDays[2:], byDay(t, db)); diff != "" {
		t.Errorf("usage by day after the drop (-want +got):\n%s", diff)
	}
	var rollupDays []time.Time
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT bucket FROM usage_rollup WHERE granularity = 'day' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var b time.Time
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		rollupDays = append(rollupDays, b.UTC())
	}
	if !slices.EqualFunc(rollupDays, []time.Time{d(12, 0).Truncate(24 * time.Hour)}, time.Time.Equal) {
		t.Errorf("roll-up days after the drop = %v, want only 2025-03-12", rollupDays)
	}

	// A row for a day long gone still goes in, to the default partition.
	insertDays(t, db, d(1, 0))
	if got := only2025(partitions(t, db, "usage"))["usage_default"]; got != 1 {
		t.Errorf("usage_default holds %d rows after an insert for a day without a partition, want 1", got)
	}
}

// TestRollupKeysCanonicalUUIDs: IDs given in upper case are stored as
// uuids, so the roll-up keys them in the lower case the raw rows read back
// in: filters in either case, group_by=token and a retention delete agree
// with the raw rows.
func TestRollupKeysCanonicalUUIDs(t *testing.T) {
	t.Parallel()
	db := open(t, Options{URL: migratedURL(t)})
	ctx := t.Context()
	token := uuid.NewString()
	at := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	rows := []store.Usage{
		{ID: uuid.NewString(), CreatedAt: at, RequestID: "r", TokenID: strings.ToUpper(token), Endpoint: "/v1/x", Status: 200, TotalTokens: 4},
		{ID: uuid.NewString(), CreatedAt: at.Add(time.Hour), RequestID: "r", TokenID: token, Endpoint: "/v1/x", Status: 200, TotalTokens: 6},
	}
	if err := db.InsertUsage(ctx, rows); err != nil {
		t.Fatalf("InsertUsage: %v", err)
	}
	want := []store.UsageTotal{{Key: token, Requests: 2, TotalTokens: 10}}
	for _, id := range []string{token, strings.ToUpper(token)} {
		for _, f := range []store.UsageFilter{{TokenID: id, GroupBy: store.GroupByToken}, {TokenID: id, GroupBy: store.GroupByToken,
			From: at.Add(-30 * time.Minute), To: at.Add(26 * time.Hour)}} {
			got, err := db.SumUsage(ctx, f)
			if err != nil {
				t.Fatalf("SumUsage: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("SumUsage(%+v) (-want +got):\n%s", f, diff)
			}
		}
	}
	if n, err := db.DeleteUsageBefore(ctx, at.Add(24*time.Hour), 10); err != nil || n != 2 {
		t.Fatalf("DeleteUsageBefore = (%d, %v), want (2, nil)", n, err)
	}
	var left int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM usage_rollup`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d roll-up rows left after deleting every usage row, want 0", left)
	}
}

// TestDropGivesWayToALongQuery: while a transaction keeps reading usage,
// dropping a partition waits for its lock only briefly (a few bounded
// attempts) and reports the lock instead of queueing every insert behind
// it; once the reader is done the drop goes through.
func TestDropGivesWayToALongQuery(t *testing.T) {
	db := open(t, Options{URL: migratedURL(t)})
	ctx := t.Context()
	day := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	if _, err := db.EnsurePartitions(ctx, day, day.Add(time.Hour)); err != nil {
		t.Fatalf("EnsurePartitions: %v", err)
	}
	reader, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback(context.WithoutCancel(ctx))
	if _, err := reader.Exec(ctx, `SELECT count(*) FROM usage`); err != nil {
		t.Fatal(err)
	}
	_, err = db.DropUsagePartitionsBefore(ctx, day.Add(24*time.Hour))
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.LockNotAvailable {
		t.Fatalf("DropUsagePartitionsBefore while a transaction reads usage: %v, want a lock timeout", err)
	}
	if _, ok := partitions(t, db, "usage")["usage_p20250310"]; !ok {
		t.Fatal("the partition went although its drop failed")
	}
	if err := reader.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DropUsagePartitionsBefore(ctx, day.Add(24*time.Hour)); err != nil {
		t.Fatalf("DropUsagePartitionsBefore after the reader: %v", err)
	}
	if _, ok := partitions(t, db, "usage")["usage_p20250310"]; ok {
		t.Error("the partition is still there after the reader finished")
	}
}
