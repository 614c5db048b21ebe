package transfer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// memDB is a Database in memory. Its transactions work on a copy, kept on
// success. alter, when set, changes each row as it is written (a broken
// dialect).
type memDB struct {
	tables []Table
	rows   map[string][]Row
	alter  func(Row)
}

func (m *memDB) Tables(context.Context) ([]Table, error) { return m.tables, nil }

func (m *memDB) ExportTx(ctx context.Context, fn func(Tx) error) error {
	return fn(&memTx{db: m, rows: m.rows})
}

func (m *memDB) ImportTx(ctx context.Context, fn func(Tx) error) error {
	tx := &memTx{db: m, rows: map[string][]Row{}}
	for k, v := range m.rows {
		tx.rows[k] = slices.Clone(v)
	}
	if err := fn(tx); err != nil {
		return err
	}
	m.rows = tx.rows
	return nil
}

type memTx struct {
	db   *memDB
	rows map[string][]Row
}

func (tx *memTx) ReadRows(_ context.Context, table string, _ []Column, fn func(Row) error) error {
	for _, r := range slices.Backward(tx.rows[table]) { // another order than written
		if err := fn(slices.Clone(r)); err != nil {
			return err
		}
	}
	return nil
}

func (tx *memTx) Count(_ context.Context, table string) (int64, error) {
	return int64(len(tx.rows[table])), nil
}

func (tx *memTx) Empty(_ context.Context, tables []string) error {
	for _, t := range tables {
		delete(tx.rows, t)
	}
	return nil
}

func (tx *memTx) WriteRows(_ context.Context, table string, _ []Column, rows []Row) error {
	for _, r := range rows {
		r = slices.Clone(r)
		if tx.db.alter != nil {
			tx.db.alter(r)
		}
		tx.rows[table] = append(tx.rows[table], r)
	}
	return nil
}

var (
	sqliteTables = []Table{
		{Name: "tokens", References: []string{"projects"}, Columns: []Column{{Name: "id", Type: "text"}, {Name: "project_id", Type: "text"}, {Name: "used_at", Type: "text", Nullable: true}}},
		{Name: "projects", Columns: []Column{{Name: "id", Type: "text"}, {Name: "active", Type: "integer"}, {Name: "meta", Type: "text"}}},
	}
	postgresTables = []Table{
		{Name: "projects", Columns: []Column{{Name: "id", Type: "uuid"}, {Name: "active", Type: "boolean"}, {Name: "meta", Type: "jsonb"}}},
		{Name: "tokens", References: []string{"projects"}, Columns: []Column{{Name: "id", Type: "uuid"}, {Name: "project_id", Type: "uuid"}, {Name: "used_at", Type: "timestamp with time zone", Nullable: true}}},
	}
)

func source() *memDB {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	return &memDB{tables: sqliteTables, rows: map[string][]Row{
		"projects": {{"p1", true, `{"b": 1, "a": [true]}`}, {"p2", false, `{}`}},
		"tokens":   {{"t1", "p1", at}, {"t2", "p1", nil}, {"t3", "p2", at.Add(time.Hour)}},
	}}
}

func TestCopyOrdersTablesAndVerifies(t *testing.T) {
	t.Parallel()
	dst := &memDB{tables: postgresTables, rows: map[string][]Row{}}
	stats, err := Copy(t.Context(), source(), dst, Options{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range stats {
		names = append(names, s.Table)
	}
	if !slices.Equal(names, []string{"projects", "tokens"}) || stats[1].Rows != 3 {
		t.Fatalf("copied %v (%+v), want projects then tokens with 3 rows", names, stats)
	}
	// A JSON document differing only in spacing and key order matches.
	dst.rows["projects"][0][2] = `{"a":[true],"b":1}`
	if _, err := Copy(t.Context(), dst, &memDB{tables: sqliteTables, rows: map[string][]Row{}}, Options{}); err != nil {
		t.Fatalf("copy back: %v", err)
	}
}

func TestCopyFailsAndKeepsTarget(t *testing.T) {
	t.Parallel()
	existing := map[string][]Row{"projects": {{"p9", true, `{}`}}}
	for _, tc := range []struct {
		name     string
		truncate bool
		alter    func(Row)
		tables   []Table
		want     error
	}{
		{name: "target holds rows", want: ErrNotEmpty},
		{name: "time loses its microseconds", truncate: true, want: ErrVerify, alter: func(r Row) {
			if tm, ok := r[len(r)-1].(time.Time); ok {
				r[len(r)-1] = tm.Truncate(time.Millisecond)
			}
		}},
		{name: "boolean flipped", truncate: true, want: ErrVerify, alter: func(r Row) {
			if b, ok := r[1].(bool); ok {
				r[1] = !b
			}
		}},
		{name: "column missing", truncate: true, want: ErrSchemaMismatch, tables: []Table{
			{Name: "projects", Columns: postgresTables[0].Columns[:2]}, postgresTables[1],
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tables := tc.tables
			if tables == nil {
				tables = postgresTables
			}
			dst := &memDB{tables: tables, rows: existing, alter: tc.alter}
			_, err := Copy(t.Context(), source(), dst, Options{Truncate: tc.truncate})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if len(dst.rows) != 1 || len(dst.rows["projects"]) != 1 || dst.rows["projects"][0][0] != "p9" {
				t.Fatalf("target changed: %v", dst.rows)
			}
		})
	}
}

func TestUnify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want Kind
		err  string
	}{
		{"text", "timestamp with time zone", KindTime, ""},
		{"integer", "boolean", KindBool, ""},
		{"text", "jsonb", KindJSON, ""},
		{"text", "uuid", KindText, ""},
		{"bigint", "integer", KindInt, ""},
		{"blob", "bytea", KindBytes, ""},
		{"integer", "timestamp with time zone", KindUnknown, "incompatible"},
		{"text[]", "text", KindUnknown, "no known mapping"},
	} {
		got, err := unify(tc.a, tc.b)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("unify(%q, %q) = %v, %v; want %v, %q", tc.a, tc.b, got, err, tc.want, tc.err)
		}
	}
}
