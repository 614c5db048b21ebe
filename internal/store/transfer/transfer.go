// Package transfer copies every row of one database into another of either
// dialect (SPEC §5, `migrate copy`): it discovers the tables of both, checks
// that their schemas agree, copies in dependency order and in batches inside
// one transaction on the target, re-encrypts secret columns, and verifies
// per-table row counts and checksums before it commits.
//
// The SQL is the store implementations' (store/postgres, store/sqlite):
// they implement Database. This package only decides what to copy and checks
// that it arrived.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Kind is the canonical type of a column, agreed between the two dialects:
// SQLite stores times and JSON as TEXT and booleans as INTEGER, so the kind
// of a column comes from both sides (see unify).
type Kind int

// Kinds. A Row holds, per kind: string (Text, JSON), int64 (Int), bool
// (Bool), time.Time in UTC (Time), []byte (Bytes), or nil for NULL.
const (
	KindUnknown Kind = iota
	KindText
	KindInt
	KindBool
	KindTime
	KindBytes
	KindJSON
)

func (k Kind) String() string {
	return [...]string{"unknown", "text", "int", "bool", "time", "bytes", "json"}[k]
}

// Column is a column as its database declares it. Type is the dialect's
// type name in lower case ("uuid", "timestamptz", "text", "integer" ...).
// Kind is set by Copy once both sides are known; Tables leaves it zero.
type Column struct {
	Name     string
	Type     string
	Nullable bool
	Kind     Kind
}

// Table is a table to copy: its columns in declaration order and the tables
// its foreign keys reference.
type Table struct {
	Name       string
	Columns    []Column
	References []string
}

// Row is one row, its values in the order of the columns asked for.
type Row []any

// Database is one side of a copy: a store implementation's export and import
// API.
type Database interface {
	// Tables lists the application's tables (not the migration
	// bookkeeping), in creation order.
	Tables(ctx context.Context) ([]Table, error)
	// ExportTx runs fn in a read-only transaction: every table read
	// through tx comes from the same snapshot.
	ExportTx(ctx context.Context, fn func(tx Tx) error) error
	// ImportTx runs fn in one transaction, committed only when fn returns
	// nil; otherwise every change made through tx is rolled back.
	ImportTx(ctx context.Context, fn func(tx Tx) error) error
}

// Tx reads and writes rows inside an ExportTx or ImportTx transaction.
type Tx interface {
	// ReadRows calls fn with each row of table, values in the order of
	// cols and converted to their Kind, in no particular order. fn may
	// keep the row.
	ReadRows(ctx context.Context, table string, cols []Column, fn func(Row) error) error
	// Count returns the number of rows in table.
	Count(ctx context.Context, table string) (int64, error)
	// Empty deletes every row of tables (listed parents first).
	Empty(ctx context.Context, tables []string) error
	// WriteRows inserts rows, values in the order of cols and of their
	// Kind, keeping every value as given.
	WriteRows(ctx context.Context, table string, cols []Column, rows []Row) error
}

// Cipher opens and seals the secrets of an encrypted column
// (*secret.Cipher).
type Cipher interface {
	Encrypt(plain []byte) ([]byte, error)
	Decrypt(ciphertext []byte) ([]byte, error)
}

// Recrypt names an encrypted column and the keys of both sides: its values
// are decrypted with From and encrypted again with To, and compared in
// clear by the checksums.
type Recrypt struct {
	Table, Column string
	From, To      Cipher
}

// DefaultBatchSize is how many rows go to the target per WriteRows.
const DefaultBatchSize = 5000

// Options configure Copy.
type Options struct {
	// Truncate empties the target's tables first, inside the copy's
	// transaction; without it a target holding rows is refused
	// (ErrNotEmpty).
	Truncate bool
	// BatchSize is the number of rows per WriteRows (DefaultBatchSize when
	// zero).
	BatchSize int
	// Recrypt lists the encrypted columns. Every binary column must be
	// listed or copied as it is; a column named here that the schema lacks
	// is an error.
	Recrypt []Recrypt
	// Progress, when set, is called after each table is copied and
	// verified (before the commit).
	Progress func(TableStats)
}

// TableStats reports one copied table.
type TableStats struct {
	Table    string
	Rows     int64
	Elapsed  time.Duration // reading, writing and verifying
	Checksum Checksum      // of the source rows, equal to the target's
}

// RowsPerSecond is Rows / Elapsed.
func (s TableStats) RowsPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Rows) / s.Elapsed.Seconds()
}

// Errors Copy returns (wrapped).
var (
	// ErrSchemaMismatch means the two databases do not have the same
	// tables and columns (bring both to the latest version first).
	ErrSchemaMismatch = errors.New("schemas differ")
	// ErrNotEmpty means the target holds rows and Truncate is off.
	ErrNotEmpty = errors.New("target database is not empty")
	// ErrVerify means a table's row count or checksum differs after the
	// copy.
	ErrVerify = errors.New("verification failed")
)

// Copy copies every table of src into dst and verifies it, in one
// transaction on dst: on any error nothing changes in dst. It returns the
// tables copied, in the order they were copied (parents before children).
func Copy(ctx context.Context, src, dst Database, opts Options) ([]TableStats, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	plan, err := planCopy(ctx, src, dst, opts.Recrypt)
	if err != nil {
		return nil, err
	}
	var stats []TableStats
	err = src.ExportTx(ctx, func(stx Tx) error {
		return dst.ImportTx(ctx, func(dtx Tx) error {
			stats = stats[:0]
			if err := prepareTarget(ctx, dtx, plan, opts.Truncate); err != nil {
				return err
			}
			for _, t := range plan {
				st, err := copyTable(ctx, stx, dtx, t, opts.BatchSize)
				if err != nil {
					return fmt.Errorf("copy table %s: %w", t.Name, err)
				}
				stats = append(stats, st)
				if opts.Progress != nil {
					opts.Progress(st)
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return stats, nil
}

// tablePlan is a table with the kinds of its columns settled and the
// re-encryption of its secret columns.
type tablePlan struct {
	Table                   // the source's columns, kinds set
	target  []Column        // the same columns as the target declares them
	recrypt map[int]Recrypt // by column index
}

// planCopy compares the two schemas and orders the tables parents first.
func planCopy(ctx context.Context, src, dst Database, recrypt []Recrypt) ([]tablePlan, error) {
	srcTables, err := src.Tables(ctx)
	if err != nil {
		return nil, fmt.Errorf("read source schema: %w", err)
	}
	dstTables, err := dst.Tables(ctx)
	if err != nil {
		return nil, fmt.Errorf("read target schema: %w", err)
	}
	byName := map[string]Table{}
	for _, t := range dstTables {
		byName[t.Name] = t
	}
	var problems []string
	var plan []tablePlan
	for _, st := range srcTables {
		dt, ok := byName[st.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("table %s exists only in the source", st.Name))
			continue
		}
		delete(byName, st.Name)
		p, tableProblems := unifyTable(st, dt)
		problems = append(problems, tableProblems...)
		plan = append(plan, p)
	}
	for _, t := range dstTables {
		if _, only := byName[t.Name]; only {
			problems = append(problems, fmt.Sprintf("table %s exists only in the target", t.Name))
		}
	}
	for _, r := range recrypt {
		i := slices.IndexFunc(plan, func(p tablePlan) bool { return p.Name == r.Table })
		j := -1
		if i >= 0 {
			j = slices.IndexFunc(plan[i].Columns, func(c Column) bool { return c.Name == r.Column })
		}
		if j < 0 || plan[i].Columns[j].Kind != KindBytes {
			problems = append(problems, fmt.Sprintf("encrypted column %s.%s is not a binary column of both schemas", r.Table, r.Column))
			continue
		}
		if plan[i].recrypt == nil {
			plan[i].recrypt = map[int]Recrypt{}
		}
		plan[i].recrypt[j] = r
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w (run `migrate up` on both databases; they must be at the same version): %s",
			ErrSchemaMismatch, strings.Join(problems, "; "))
	}
	return order(plan)
}

// unifyTable settles the kind of each column of a table present on both
// sides; columns are copied in the source's order.
func unifyTable(src, dst Table) (tablePlan, []string) {
	var problems []string
	p := tablePlan{Table: Table{Name: src.Name, References: src.References}}
	dstCols := map[string]Column{}
	for _, c := range dst.Columns {
		dstCols[c.Name] = c
	}
	for _, sc := range src.Columns {
		dc, ok := dstCols[sc.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("column %s.%s exists only in the source", src.Name, sc.Name))
			continue
		}
		delete(dstCols, sc.Name)
		kind, err := unify(sc.Type, dc.Type)
		if err != nil {
			problems = append(problems, fmt.Sprintf("column %s.%s: %v", src.Name, sc.Name, err))
		}
		if sc.Nullable != dc.Nullable {
			problems = append(problems, fmt.Sprintf("column %s.%s is nullable in one schema only", src.Name, sc.Name))
		}
		sc.Kind, dc.Kind = kind, kind
		p.Columns = append(p.Columns, sc)
		p.target = append(p.target, dc)
	}
	for _, dc := range dst.Columns {
		if _, only := dstCols[dc.Name]; only {
			problems = append(problems, fmt.Sprintf("column %s.%s exists only in the target", dst.Name, dc.Name))
		}
	}
	return p, problems
}

// kinds maps each declared type to its kind; SQLite's "text" and "integer"
// are ambiguous and settled by the other side.
var kinds = map[string]Kind{
	"uuid": KindText, "text": KindText, "character varying": KindText,
	"integer": KindInt, "bigint": KindInt, "smallint": KindInt,
	"boolean":     KindBool,
	"timestamptz": KindTime, "timestamp with time zone": KindTime,
	"bytea": KindBytes, "blob": KindBytes,
	"jsonb": KindJSON, "json": KindJSON,
}

// unify returns the kind of a column declared a in one database and b in
// the other.
func unify(a, b string) (Kind, error) {
	ka, kb := kinds[a], kinds[b]
	switch {
	case ka == KindUnknown || kb == KindUnknown:
		return KindUnknown, fmt.Errorf("types %q and %q: no known mapping", a, b)
	case ka == kb:
		return ka, nil
	}
	// SQLite's TEXT holds times and JSON; its INTEGER holds booleans.
	for _, pair := range [][3]Kind{
		{KindText, KindTime, KindTime}, {KindText, KindJSON, KindJSON}, {KindInt, KindBool, KindBool},
	} {
		if (ka == pair[0] && kb == pair[1]) || (ka == pair[1] && kb == pair[0]) {
			return pair[2], nil
		}
	}
	return KindUnknown, fmt.Errorf("types %q and %q are incompatible", a, b)
}

// order sorts tables so that each comes after the tables it references,
// otherwise keeping creation order.
func order(plan []tablePlan) ([]tablePlan, error) {
	done := map[string]bool{}
	var out []tablePlan
	for len(out) < len(plan) {
		progressed := false
		for _, p := range plan {
			if done[p.Name] {
				continue
			}
			ready := true
			for _, ref := range p.References {
				if ref != p.Name && !done[ref] {
					ready = false
				}
			}
			if ready {
				done[p.Name] = true
				out = append(out, p)
				progressed = true
			}
		}
		if !progressed {
			return nil, errors.New("order tables: the foreign keys form a cycle or reference a table that is not copied")
		}
	}
	return out, nil
}

// prepareTarget refuses a target holding rows, or empties it with truncate.
func prepareTarget(ctx context.Context, tx Tx, plan []tablePlan, truncate bool) error {
	names := make([]string, len(plan))
	for i, p := range plan {
		names[i] = p.Name
	}
	if truncate {
		if err := tx.Empty(ctx, names); err != nil {
			return fmt.Errorf("empty target: %w", err)
		}
		return nil
	}
	var full []string
	for _, name := range names {
		n, err := tx.Count(ctx, name)
		if err != nil {
			return fmt.Errorf("count target rows: %w", err)
		}
		if n > 0 {
			full = append(full, fmt.Sprintf("%s (%d rows)", name, n))
		}
	}
	if len(full) > 0 {
		return fmt.Errorf("%w: %s; pass --truncate to replace its data", ErrNotEmpty, strings.Join(full, ", "))
	}
	return nil
}

// copyTable streams one table from stx to dtx in batches, then reads it
// back from dtx and compares count and checksum.
func copyTable(ctx context.Context, stx, dtx Tx, t tablePlan, batchSize int) (TableStats, error) {
	start := time.Now()
	var (
		sum   Checksum
		batch = make([]Row, 0, batchSize)
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := dtx.WriteRows(ctx, t.Name, t.target, batch); err != nil {
			return fmt.Errorf("write rows: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	err := stx.ReadRows(ctx, t.Name, t.Columns, func(r Row) error {
		plain, err := t.open(r, func(rc Recrypt) Cipher { return rc.From })
		if err != nil {
			return fmt.Errorf("%w (is the source key the one the source was written with?)", err)
		}
		if err := sum.add(t.Columns, r, plain); err != nil {
			return err
		}
		for i, p := range plain {
			if r[i], err = t.recrypt[i].To.Encrypt(p); err != nil {
				return fmt.Errorf("encrypt %s.%s: %w", t.Name, t.Columns[i].Name, err)
			}
		}
		batch = append(batch, r)
		if len(batch) == batchSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return TableStats{}, err
	}
	got, err := tableChecksum(ctx, dtx, t)
	if err != nil {
		return TableStats{}, fmt.Errorf("verify: %w", err)
	}
	if got != sum {
		return TableStats{}, fmt.Errorf("%w: source has %d rows (checksum %s), target %d rows (checksum %s)",
			ErrVerify, sum.Rows, sum.hex(), got.Rows, got.hex())
	}
	n, err := dtx.Count(ctx, t.Name)
	if err != nil {
		return TableStats{}, fmt.Errorf("verify: %w", err)
	}
	if n != sum.Rows {
		return TableStats{}, fmt.Errorf("%w: copied %d rows, target counts %d", ErrVerify, sum.Rows, n)
	}
	return TableStats{Table: t.Name, Rows: sum.Rows, Elapsed: time.Since(start), Checksum: sum}, nil
}

// tableChecksum reads a table back from the target, opening encrypted
// columns with the target key.
func tableChecksum(ctx context.Context, tx Tx, t tablePlan) (Checksum, error) {
	var sum Checksum
	err := tx.ReadRows(ctx, t.Name, t.target, func(r Row) error {
		plain, err := t.open(r, func(rc Recrypt) Cipher { return rc.To })
		if err != nil {
			return fmt.Errorf("%w (with the target key)", err)
		}
		return sum.add(t.Columns, r, plain)
	})
	return sum, err
}

// open decrypts the encrypted columns of r with the key chosen by key,
// returning the clear values by column index (nil: no encrypted value).
func (t tablePlan) open(r Row, key func(Recrypt) Cipher) (map[int][]byte, error) {
	var plain map[int][]byte
	for i, rc := range t.recrypt {
		if r[i] == nil {
			continue
		}
		p, err := key(rc).Decrypt(r[i].([]byte))
		if err != nil {
			return nil, fmt.Errorf("decrypt %s.%s of row %v: %w", t.Name, t.Columns[i].Name, r[0], err)
		}
		if plain == nil {
			plain = map[int][]byte{}
		}
		plain[i] = p
	}
	return plain, nil
}
