package schema_test

import (
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
)

// dump returns every row of table, ordered by id, each rendered as text.
func dump(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT * FROM ` + table + ` ORDER BY id`)
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = string(b)
			}
		}
		out = append(out, fmt.Sprint(vals...))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMigration4KeepsEveryRow fills usage and audit_events at version 3,
// migrates to 4 (PostgreSQL: into daily partitions; both: the roll-up built
// from the rows) and back, and checks that no row changed or went missing,
// that PostgreSQL's default partitions stay empty, and that the roll-up
// answers like the raw rows.
func TestMigration4KeepsEveryRow(t *testing.T) {
	t.Parallel()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			dsn, db := fresh(t, driver)
			m := newMigrator(t, driver, dsn, nil)
			if err := m.Goto(t.Context(), 3); err != nil {
				t.Fatalf("goto 3: %v", err)
			}
			rows := seedVersion3(t, driver, db)
			before := map[string][]string{"usage": dump(t, db, "usage"), "audit_events": dump(t, db, "audit_events")}
			if len(before["usage"]) != len(rows) {
				t.Fatalf("seeded %d usage rows, read %d", len(rows), len(before["usage"]))
			}

			if err := m.Goto(t.Context(), 4); err != nil {
				t.Fatalf("goto 4: %v", err)
			}
			for table, want := range before {
				if diff := cmp.Diff(want, dump(t, db, table)); diff != "" {
					t.Errorf("%s after migrating up (-before +after):\n%s", table, diff)
				}
			}
			if driver == schema.DriverPostgres {
				var kinds string
				if err := db.QueryRow(`SELECT string_agg(relkind::text, '' ORDER BY relname) FROM pg_class
					WHERE relname IN ('usage', 'audit_events') AND relnamespace = current_schema()::regnamespace`).Scan(&kinds); err != nil {
					t.Fatal(err)
				}
				if kinds != "pp" {
					t.Errorf("relkind of audit_events and usage = %q, want partitioned tables (\"pp\")", kinds)
				}
				for _, def := range []string{"usage_default", "audit_events_default"} {
					var n int
					if err := db.QueryRow(`SELECT count(*) FROM ` + def).Scan(&n); err != nil {
						t.Fatal(err)
					}
					if n != 0 {
						t.Errorf("%s holds %d rows, want 0 (every day with rows gets its partition)", def, n)
					}
				}
			}
			checkRollup(t, driver, dsn, rows)

			if err := m.Goto(t.Context(), 3); err != nil {
				t.Fatalf("goto 3 again: %v", err)
			}
			for table, want := range before {
				if diff := cmp.Diff(want, dump(t, db, table)); diff != "" {
					t.Errorf("%s after migrating down (-before +after):\n%s", table, diff)
				}
			}
		})
	}
}

// seedVersion3 inserts usage rows and audit events spread over 40 days
// (some at the last microsecond of a day, some without project or token)
// with the schema of version 3, and returns the usage rows.
func seedVersion3(t *testing.T, driver string, db *sql.DB) []store.Usage {
	t.Helper()
	param := func(i int) string {
		if driver == schema.DriverPostgres {
			return "$" + strconv.Itoa(i)
		}
		return "?"
	}
	ts := func(at time.Time) any {
		if driver == schema.DriverPostgres {
			return at
		}
		return at.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	null := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	list := func(n int) string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = param(i + 1)
		}
		return strings.Join(ps, ", ")
	}
	project, token := uuid.NewString(), uuid.NewString()
	start := time.Date(2025, 1, 20, 0, 0, 0, 0, time.UTC)
	var rows []store.Usage
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1200 {
		at := start.Add(time.Duration(i) * 47 * time.Minute)
		if i%100 == 0 {
			at = at.Truncate(24 * time.Hour).Add(24*time.Hour - time.Microsecond)
		}
		u := store.Usage{ID: uuid.NewString(), CreatedAt: at, RequestID: "req-" + strconv.Itoa(i),
			Model: []string{"gpt-4o", "claude"}[i%2], Endpoint: "/v1/chat/completions", Status: 200,
			PromptTokens: i % 97, CompletionTokens: i % 13, TotalTokens: i%97 + i%13, Cached: i%3 == 0}
		if i%5 != 0 {
			u.ProjectID = project
		}
		if i%7 != 0 {
			u.TokenID = token
		}
		rows = append(rows, u)
		if _, err := tx.Exec(`INSERT INTO usage (id, created_at, request_id, project_id, token_id, model, endpoint,
			status, prompt_tokens, completion_tokens, total_tokens, latency_ms, streamed, cached) VALUES (`+list(14)+`)`,
			u.ID, ts(at), u.RequestID, null(u.ProjectID), null(u.TokenID), u.Model, u.Endpoint, u.Status,
			u.PromptTokens, u.CompletionTokens, u.TotalTokens, i, i%2 == 0, u.Cached); err != nil {
			t.Fatalf("insert usage: %v", err)
		}
		if i%4 == 0 {
			if _, err := tx.Exec(`INSERT INTO audit_events (id, created_at, actor, action, outcome, project_id,
				metadata) VALUES (`+list(7)+`)`, uuid.NewString(), ts(at), "management", "token.create", "success",
				null(u.ProjectID), `{"n": `+strconv.Itoa(i)+`}`); err != nil {
				t.Fatalf("insert audit event: %v", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkRollup opens a store on the migrated database and compares SumUsage
// (read from the roll-up the migration built) with the seeded rows.
func checkRollup(t *testing.T, driver, dsn string, rows []store.Usage) {
	t.Helper()
	var (
		s   store.Store
		err error
	)
	switch driver {
	case schema.DriverPostgres:
		s, err = postgres.Open(t.Context(), postgres.Options{URL: dsn})
	case schema.DriverSQLite:
		s, err = sqlite.Open(t.Context(), sqlite.Options{Path: dsn})
	}
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer s.Close()
	from, to := rows[100].CreatedAt.Add(-17*time.Minute), rows[1000].CreatedAt.Add(3*time.Second)
	for _, f := range []store.UsageFilter{
		{GroupBy: store.GroupByDay},
		{GroupBy: store.GroupByModel},
		{GroupBy: store.GroupByToken},
		{GroupBy: store.GroupByCache, From: from, To: to},
		{GroupBy: store.GroupByDay, From: from, To: to, ProjectID: rows[1].ProjectID},
	} {
		got, err := s.SumUsage(t.Context(), f)
		if err != nil {
			t.Fatalf("SumUsage: %v", err)
		}
		if diff := cmp.Diff(sumRows(rows, f), got); diff != "" {
			t.Errorf("SumUsage(%+v) after the migration (-raw +roll-up):\n%s", f, diff)
		}
	}
}

// sumRows aggregates rows the way SumUsage must, ordered by key.
func sumRows(rows []store.Usage, f store.UsageFilter) []store.UsageTotal {
	sums := map[string]*store.UsageTotal{}
	for _, u := range rows {
		if (f.ProjectID != "" && u.ProjectID != f.ProjectID) || (!f.From.IsZero() && u.CreatedAt.Before(f.From)) ||
			(!f.To.IsZero() && !u.CreatedAt.Before(f.To)) {
			continue
		}
		key := map[string]string{store.GroupByDay: u.CreatedAt.UTC().Format(time.DateOnly), store.GroupByModel: u.Model,
			store.GroupByToken: u.TokenID, store.GroupByCache: map[bool]string{true: "hit", false: "miss"}[u.Cached]}[f.GroupBy]
		s := sums[key]
		if s == nil {
			s = &store.UsageTotal{Key: key}
			sums[key] = s
		}
		s.Requests++
		s.PromptTokens += int64(u.PromptTokens)
		s.CompletionTokens += int64(u.CompletionTokens)
		s.TotalTokens += int64(u.TotalTokens)
	}
	var out []store.UsageTotal
	for _, s := range sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b store.UsageTotal) int { return strings.Compare(a.Key, b.Key) })
	return out
}
