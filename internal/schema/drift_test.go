package schema_test

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/llmproxy/llm-proxy/internal/schema"
)

// table is the logical shape of one table, ignoring column types (uuid vs
// TEXT, timestamptz vs TEXT) which differ between the dialects on purpose.
type table struct {
	NotNull map[string]bool   // column → NOT NULL (primary key columns count as NOT NULL)
	Unique  []string          // unique keys, primary key included, as "col1,col2", sorted
	Indexes map[string]string // other indexes: name → "col1,col2" (+ " WHERE…" when partial)
}

// shape maps table names (bookkeeping tables excluded) to their shape.
type shape map[string]*table

// TestDialectsDoNotDrift migrates an empty SQLite and an empty PostgreSQL
// database to the latest version and compares their logical schemas.
func TestDialectsDoNotDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	got := map[string]shape{}
	for _, driver := range drivers {
		dsn, db := fresh(t, driver)
		if err := newMigrator(t, driver, dsn, nil).Up(ctx); err != nil {
			t.Fatalf("%s: %v", driver, err)
		}
		got[driver] = shapeOf(t, driver, db)
	}
	if len(got[schema.DriverPostgres]) == 0 {
		t.Fatal("no tables found on postgres")
	}
	if diff := cmp.Diff(got[schema.DriverPostgres], got[schema.DriverSQLite]); diff != "" {
		t.Fatalf("logical schemas differ (-postgres +sqlite):\n%s", diff)
	}
}

func shapeOf(t *testing.T, driver string, db *sql.DB) shape {
	t.Helper()
	var (
		s   shape
		err error
	)
	switch driver {
	case schema.DriverPostgres:
		s, err = postgresShape(db)
	case schema.DriverSQLite:
		s, err = sqliteShape(db)
	}
	if err != nil {
		t.Fatalf("read %s schema: %v", driver, err)
	}
	for _, tb := range s {
		slices.Sort(tb.Unique)
	}
	return s
}

func (s shape) table(name string) *table {
	tb, ok := s[name]
	if !ok {
		tb = &table{NotNull: map[string]bool{}, Indexes: map[string]string{}}
		s[name] = tb
	}
	return tb
}

// postgresShape reads the logical schema of the current schema's tables.
// Partitions are left out (their parent stands for them), and a
// partitioned table's unique keys are read without its partition key
// created_at, which PostgreSQL requires in them and SQLite, without
// partitions, has no need of.
func postgresShape(db *sql.DB) (shape, error) {
	s := shape{}
	rows, err := db.Query(`
		SELECT c.table_name, c.column_name, c.is_nullable = 'NO'
		FROM information_schema.columns c
		JOIN information_schema.tables t USING (table_schema, table_name)
		JOIN pg_class r ON r.oid = to_regclass(quote_ident(c.table_name))
		WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
		  AND NOT r.relispartition AND c.table_name <> 'schema_migrations'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var tbl, col string
		var notNull bool
		if err := rows.Scan(&tbl, &col, &notNull); err != nil {
			return nil, err
		}
		s.table(tbl).NotNull[col] = notNull
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}

	idx, err := db.Query(`
		SELECT t.relname, i.relname, ix.indisunique, ix.indpred IS NOT NULL,
		       array_to_string(ARRAY(
		           SELECT a.attname
		           FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
		           WHERE NOT (t.relkind = 'p' AND ix.indisunique AND a.attname = 'created_at')
		           ORDER BY k.ord), ',')
		FROM pg_index ix
		JOIN pg_class t ON t.oid = ix.indrelid
		JOIN pg_class i ON i.oid = ix.indexrelid
		JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE n.nspname = current_schema() AND NOT t.relispartition AND t.relname <> 'schema_migrations'`)
	if err != nil {
		return nil, err
	}
	defer idx.Close()
	for idx.Next() {
		var tbl, name, cols string
		var unique, partial bool
		if err := idx.Scan(&tbl, &name, &unique, &partial, &cols); err != nil {
			return nil, err
		}
		addIndex(s.table(tbl), name, cols, unique, partial)
	}
	return s, idx.Err()
}

func addIndex(tb *table, name, cols string, unique, partial bool) {
	if partial {
		cols += " WHERE…"
	}
	if unique {
		tb.Unique = append(tb.Unique, cols)
		return
	}
	tb.Indexes[name] = cols
}

func sqliteShape(db *sql.DB) (shape, error) {
	names, err := strings1(db, `SELECT name FROM sqlite_master
		WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'schema_migrations'`)
	if err != nil {
		return nil, err
	}
	s := shape{}
	for _, name := range names {
		tb := s.table(name)
		if err := sqliteColumns(db, name, tb); err != nil {
			return nil, err
		}
		if err := sqliteIndexes(db, name, tb); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func sqliteColumns(db *sql.DB, name string, tb *table) error {
	rows, err := db.Query(`SELECT name, "notnull", pk FROM pragma_table_info(?) ORDER BY pk`, name)
	if err != nil {
		return err
	}
	defer rows.Close()
	var pk []string
	for rows.Next() {
		var col string
		var notNull bool
		var pkPos int
		if err := rows.Scan(&col, &notNull, &pkPos); err != nil {
			return err
		}
		tb.NotNull[col] = notNull || pkPos > 0
		if pkPos > 0 {
			pk = append(pk, col)
		}
	}
	if len(pk) > 0 {
		tb.Unique = append(tb.Unique, strings.Join(pk, ","))
	}
	return rows.Err()
}

func sqliteIndexes(db *sql.DB, name string, tb *table) error {
	type index struct {
		name            string
		unique, partial bool
	}
	rows, err := db.Query(`SELECT name, "unique", partial FROM pragma_index_list(?) WHERE origin <> 'pk'`, name)
	if err != nil {
		return err
	}
	var list []index
	for rows.Next() {
		var ix index
		if err := rows.Scan(&ix.name, &ix.unique, &ix.partial); err != nil {
			rows.Close()
			return err
		}
		list = append(list, ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, ix := range list {
		cols, err := strings1(db, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, ix.name)
		if err != nil {
			return err
		}
		addIndex(tb, ix.name, strings.Join(cols, ","), ix.unique, ix.partial)
	}
	return nil
}

// strings1 returns the single string column of a query's rows.
func strings1(db *sql.DB, query string, args ...any) ([]string, error) {
	rows, err := db.Query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
