package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store/transfer"
)

var _ transfer.Database = (*DB)(nil)

// Tables lists the application's tables in creation order, with their
// declared column types (lower case) and the tables their foreign keys
// reference.
func (db *DB) Tables(ctx context.Context) ([]transfer.Table, error) {
	var tables []transfer.Table
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := db.query(ctx, tx, `SELECT name FROM sqlite_master
			WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name <> 'schema_migrations'
			ORDER BY rowid`)
		if err != nil {
			return err
		}
		var names []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return err
			}
			names = append(names, name)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		for _, name := range names {
			t, err := db.describe(ctx, tx, name)
			if err != nil {
				return err
			}
			tables = append(tables, t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return tables, nil
}

// closeRows closes rows after iteration and returns its error, if any.
func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return translate(err)
}

func (db *DB) describe(ctx context.Context, tx *sql.Tx, table string) (transfer.Table, error) {
	t := transfer.Table{Name: table}
	rows, err := db.query(ctx, tx, `SELECT name, lower(type), "notnull", pk FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		return t, err
	}
	for rows.Next() {
		var (
			c           transfer.Column
			notNull, pk int
		)
		if err := rows.Scan(&c.Name, &c.Type, &notNull, &pk); err != nil {
			rows.Close()
			return t, err
		}
		// A PRIMARY KEY column is NOT NULL in PostgreSQL and, for the
		// proxy's writes, in SQLite too.
		c.Nullable = notNull == 0 && pk == 0
		t.Columns = append(t.Columns, c)
	}
	if err := closeRows(rows); err != nil {
		return t, err
	}
	rows, err = db.query(ctx, tx, `SELECT DISTINCT "table" FROM pragma_foreign_key_list(?)`, table)
	if err != nil {
		return t, err
	}
	for rows.Next() {
		var ref string
		if err := rows.Scan(&ref); err != nil {
			rows.Close()
			return t, err
		}
		t.References = append(t.References, ref)
	}
	return t, closeRows(rows)
}

// ExportTx runs fn in a read transaction on the read pool: one snapshot of
// the whole database.
func (db *DB) ExportTx(ctx context.Context, fn func(transfer.Tx) error) error {
	return db.readTx(ctx, func(tx *sql.Tx) error { return fn(transferTx{db: db, tx: tx}) })
}

// ImportTx runs fn in one write transaction, committed when fn returns nil.
func (db *DB) ImportTx(ctx context.Context, fn func(transfer.Tx) error) error {
	return db.inTx(ctx, func(tx *sql.Tx) error { return fn(transferTx{db: db, tx: tx}) })
}

// transferTx is transfer.Tx on a SQLite transaction.
type transferTx struct {
	db *DB
	tx *sql.Tx
}

// ident quotes a table or column name read from the catalog.
func ident(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

func columnList(cols []transfer.Column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = ident(c.Name)
	}
	return strings.Join(names, ", ")
}

func (t transferTx) ReadRows(ctx context.Context, table string, cols []transfer.Column, fn func(transfer.Row) error) error {
	rows, err := t.db.query(ctx, t.tx, `SELECT `+columnList(cols)+` FROM `+ident(table))
	if err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	raw := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("read %s: %w", table, translate(err))
		}
		r := make(transfer.Row, len(cols))
		for i, c := range cols {
			if r[i], err = fromSQLite(raw[i], c.Kind); err != nil {
				return fmt.Errorf("read %s.%s of row %v: %w", table, c.Name, raw[0], err)
			}
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", table, translate(err))
	}
	return nil
}

// fromSQLite converts a stored value to its kind's Go type.
func fromSQLite(v any, kind transfer.Kind) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch kind {
	case transfer.KindText, transfer.KindJSON:
		switch v := v.(type) {
		case string:
			return v, nil
		case []byte:
			return string(v), nil
		}
	case transfer.KindInt:
		if n, ok := v.(int64); ok {
			return n, nil
		}
	case transfer.KindBool:
		if n, ok := v.(int64); ok && (n == 0 || n == 1) {
			return n == 1, nil
		}
	case transfer.KindTime:
		return parseTime(v)
	case transfer.KindBytes:
		switch v := v.(type) {
		case []byte:
			return v, nil
		case string:
			return []byte(v), nil
		}
	}
	return nil, fmt.Errorf("%T value %v is not a valid %s", v, v, kind)
}

func (t transferTx) Count(ctx context.Context, table string) (int64, error) {
	var n int64
	if err := t.db.queryRow(ctx, t.tx, `SELECT count(*) FROM `+ident(table), nil, &n); err != nil {
		return 0, fmt.Errorf("count %s: %w", table, err)
	}
	return n, nil
}

// Empty deletes children before parents, so foreign keys hold throughout.
func (t transferTx) Empty(ctx context.Context, tables []string) error {
	for _, table := range slices.Backward(tables) {
		if _, err := t.db.exec(ctx, t.tx, `DELETE FROM `+ident(table)); err != nil {
			return fmt.Errorf("empty %s: %w", table, err)
		}
	}
	return nil
}

func (t transferTx) WriteRows(ctx context.Context, table string, cols []transfer.Column, rows []transfer.Row) error {
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ")
	query := `INSERT INTO ` + ident(table) + ` (` + columnList(cols) + `) VALUES (` + marks + `)`
	stmt, err := t.tx.PrepareContext(ctx, query)
	if err != nil {
		return fmt.Errorf("write %s: %w", table, translate(err))
	}
	defer stmt.Close()
	defer t.db.logSQL(ctx, query, time.Now())
	args := make([]any, len(cols))
	for _, r := range rows {
		for i, v := range r {
			args[i] = toSQLite(v)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("write %s row %v: %w", table, r[0], translate(err))
		}
	}
	return nil
}

// toSQLite converts a value of its kind's Go type to what the column
// stores.
func toSQLite(v any) any {
	switch v := v.(type) {
	case time.Time:
		return timeArg(v)
	case bool:
		if v {
			return 1
		}
		return 0
	}
	return v
}
