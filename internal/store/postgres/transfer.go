package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/llmproxy/llm-proxy/internal/store/transfer"
)

var _ transfer.Database = (*DB)(nil)

// Tables lists the application's tables of the current schema in creation
// order (partitions excluded), with their column types as format_type
// names them and the tables their foreign keys reference.
func (db *DB) Tables(ctx context.Context) ([]transfer.Table, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	type rel struct {
		oid  uint32
		name string
	}
	rows, err := c.Query(ctx, `SELECT c.oid, c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
			AND c.relname <> 'schema_migrations'
		ORDER BY c.oid`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", translate(err))
	}
	rels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rel, error) {
		var x rel
		return x, r.Scan(&x.oid, &x.name)
	})
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", translate(err))
	}
	tables := make([]transfer.Table, 0, len(rels))
	for _, r := range rels {
		t := transfer.Table{Name: r.name}
		rows, err := c.Query(ctx, `SELECT attname, format_type(atttypid, NULL), NOT attnotnull FROM pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, r.oid)
		if err != nil {
			return nil, fmt.Errorf("describe %s: %w", r.name, translate(err))
		}
		t.Columns, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (transfer.Column, error) {
			var col transfer.Column
			return col, r.Scan(&col.Name, &col.Type, &col.Nullable)
		})
		if err != nil {
			return nil, fmt.Errorf("describe %s: %w", r.name, translate(err))
		}
		rows, err = c.Query(ctx, `SELECT DISTINCT p.relname FROM pg_constraint k
			JOIN pg_class p ON p.oid = k.confrelid
			WHERE k.conrelid = $1 AND k.contype = 'f'`, r.oid)
		if err != nil {
			return nil, fmt.Errorf("describe %s: %w", r.name, translate(err))
		}
		if t.References, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("describe %s: %w", r.name, translate(err))
		}
		tables = append(tables, t)
	}
	return tables, nil
}

// ExportTx runs fn in a read-only REPEATABLE READ transaction: one snapshot
// of the whole database.
func (db *DB) ExportTx(ctx context.Context, fn func(transfer.Tx) error) error {
	return db.transferTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn, false)
}

// ImportTx runs fn in one transaction, committed when fn returns nil; rows
// written through it go in with COPY.
func (db *DB) ImportTx(ctx context.Context, fn func(transfer.Tx) error) error {
	return db.transferTx(ctx, pgx.TxOptions{}, fn, true)
}

func (db *DB) transferTx(ctx context.Context, opts pgx.TxOptions, fn func(transfer.Tx) error, commit bool) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tx, err := c.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", translate(err))
	}
	if err := fn(transferTx{tx: tx}); err != nil || !commit {
		if rerr := tx.Rollback(context.WithoutCancel(ctx)); rerr != nil && err == nil {
			return fmt.Errorf("end read transaction: %w", rerr)
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", translate(err))
	}
	return nil
}

// transferTx is transfer.Tx on a PostgreSQL transaction.
type transferTx struct{ tx pgx.Tx }

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// textTypes are read as text: their Go form (a [16]byte, a decoded
// document) is not the canonical one.
var textTypes = map[string]bool{"uuid": true, "jsonb": true, "json": true}

func (t transferTx) ReadRows(ctx context.Context, table string, cols []transfer.Column, fn func(transfer.Row) error) error {
	list := make([]string, len(cols))
	for i, c := range cols {
		list[i] = ident(c.Name)
		if textTypes[c.Type] {
			list[i] += "::text"
		}
	}
	rows, err := t.tx.Query(ctx, `SELECT `+strings.Join(list, ", ")+` FROM `+ident(table))
	if err != nil {
		return fmt.Errorf("read %s: %w", table, translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return fmt.Errorf("read %s: %w", table, translate(err))
		}
		r := make(transfer.Row, len(cols))
		for i, c := range cols {
			if r[i], err = fromPostgres(vals[i], c.Kind); err != nil {
				return fmt.Errorf("read %s.%s of row %v: %w", table, c.Name, vals[0], err)
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

// fromPostgres converts a decoded value to its kind's Go type.
func fromPostgres(v any, kind transfer.Kind) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch v := v.(type) {
	case string:
		if kind == transfer.KindText || kind == transfer.KindJSON {
			return v, nil
		}
	case int16:
		if kind == transfer.KindInt {
			return int64(v), nil
		}
	case int32:
		if kind == transfer.KindInt {
			return int64(v), nil
		}
	case int64:
		if kind == transfer.KindInt {
			return v, nil
		}
	case bool:
		if kind == transfer.KindBool {
			return v, nil
		}
	case []byte:
		if kind == transfer.KindBytes {
			return v, nil
		}
	case time.Time:
		if kind == transfer.KindTime {
			return v.UTC(), nil
		}
	}
	return nil, fmt.Errorf("%T value is not a valid %s", v, kind)
}

func (t transferTx) Count(ctx context.Context, table string) (int64, error) {
	var n int64
	if err := t.tx.QueryRow(ctx, `SELECT count(*) FROM `+ident(table)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", table, translate(err))
	}
	return n, nil
}

// Empty truncates every table in one statement (so foreign keys among them
// do not object); TRUNCATE is transactional in PostgreSQL.
func (t transferTx) Empty(ctx context.Context, tables []string) error {
	list := make([]string, len(tables))
	for i, name := range tables {
		list[i] = ident(name)
	}
	if _, err := t.tx.Exec(ctx, `TRUNCATE `+strings.Join(list, ", ")); err != nil {
		return fmt.Errorf("truncate: %w", translate(err))
	}
	return nil
}

func (t transferTx) WriteRows(ctx context.Context, table string, cols []transfer.Column, rows []transfer.Row) error {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	native := make([][]any, len(rows))
	for n, r := range rows {
		native[n] = make([]any, len(r))
		for i, c := range cols {
			native[n][i] = r[i]
			if s, ok := r[i].(string); ok && c.Type == "uuid" {
				u, err := uuid.Parse(s)
				if err != nil {
					return fmt.Errorf("write %s row %v: column %s: %q is not a UUID", table, r[0], c.Name, s)
				}
				native[n][i] = pgtype.UUID{Bytes: u, Valid: true}
			}
		}
	}
	if _, err := t.tx.CopyFrom(ctx, pgx.Identifier{table}, names, pgx.CopyFromRows(native)); err != nil {
		return fmt.Errorf("write %s: %w", table, translate(err))
	}
	return nil
}
