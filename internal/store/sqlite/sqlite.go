// Package sqlite implements store.Store on a single SQLite file with
// modernc.org/sqlite (no cgo).
//
// One process owns the file: writes go through a single writer connection
// (so they are serialised in-process and never meet SQLITE_BUSY), reads go
// through a separate query-only pool, and the journal is WAL so readers do
// not block the writer. A lock file next to the database keeps a second
// process out.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/llmproxy/llm-proxy/internal/store"
)

// ErrInUse is returned (wrapped) by Open when another process holds the
// database file.
var ErrInUse = errors.New("sqlite database in use")

// memoryPath selects a private in-memory database.
const memoryPath = ":memory:"

// busyTimeout is how long a connection waits on SQLite's file locks (only
// a checkpoint or an external tool can hold them, given the single writer).
const busyTimeout = 10 * time.Second

// Options configure Open.
type Options struct {
	Path      string       // file path or ":memory:"
	ReadConns int          // read pool size (default 4)
	Echo      bool         // log each statement with its duration (never argument values) at info level
	Logger    *slog.Logger // nil discards
}

// DB is the SQLite store. It is safe for concurrent use; Close releases the
// connections and the lock file.
type DB struct {
	writer    *sql.DB
	reader    *sql.DB // the writer itself for ":memory:"
	dsn       string  // what SchemaDSN returns
	readConns int
	lock      *fileLock
	echo      bool
	logger    *slog.Logger
	locks     locks // TryLock's named locks
}

var _ store.Store = (*DB)(nil)

type inUseError struct{ path string }

func (e *inUseError) Error() string {
	return "database " + e.path + " is already in use by another proxy process; SQLite supports a single instance" +
		" — set DATABASE_URL to a PostgreSQL database to run more than one"
}

func (e *inUseError) Unwrap() error { return ErrInUse }

// Open opens the database file, creating it (mode 0600, in a directory
// created 0700) if needed. It does not run migrations. It fails with
// ErrInUse when another DB, in this or another process, has the same file
// open.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Path == "" {
		return nil, errors.New("open sqlite: empty database path")
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db := &DB{echo: opts.Echo, logger: opts.Logger, readConns: opts.ReadConns}
	if opts.Path == memoryPath {
		// An in-memory database is served by one connection, so reads
		// share the writer. It is a named shared-cache database so that
		// the migrator can reach it through SchemaDSN while it is open.
		var b [8]byte
		_, _ = rand.Read(b[:])
		db.dsn = "file:memdb-" + hex.EncodeToString(b[:]) + "?mode=memory&cache=shared"
		w, err := openPool(ctx, db.dsn, 1, false)
		if err != nil {
			return nil, err
		}
		db.writer, db.reader, db.readConns = w, w, 0
		return db, nil
	}
	db.dsn = opts.Path

	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	lock, err := acquireLock(opts.Path + ".lock")
	if err != nil {
		if errors.Is(err, errLocked) {
			return nil, &inUseError{path: opts.Path}
		}
		return nil, err
	}
	db.lock = lock
	if err := db.openFile(ctx, opts.Path); err != nil {
		return nil, errors.Join(err, lock.release())
	}
	return db, nil
}

func (db *DB) openFile(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	if err := errors.Join(f.Chmod(0o600), f.Close()); err != nil {
		return fmt.Errorf("set database file mode: %w", err)
	}
	dsn := "file:" + path
	w, err := openPool(ctx, dsn, 1, false)
	if err != nil {
		return err
	}
	r, err := openPool(ctx, dsn, db.readConns, true)
	if err != nil {
		return errors.Join(err, w.Close())
	}
	db.writer, db.reader = w, r
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return errors.Join(fmt.Errorf("set database file mode: %w", err), r.Close(), w.Close())
		}
	}
	return nil
}

// openPool opens a pool of conns connections. The writer pool switches the
// file to WAL and takes the write lock at BEGIN, so a transaction never has
// to upgrade; read pools are query-only.
func openPool(ctx context.Context, dsn string, conns int, readOnly bool) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
		// Each reader's page cache fills over hours of small reads (token
		// loads, sweeps, the console) up to its limit: 512 KiB each, not
		// SQLite's 2 MiB default, bounds the four readers at 2 MiB of
		// resident memory (a 10-minute soak grew 1.07× with the default);
		// the kernel's file cache still serves the pages they drop.
		q.Add("_pragma", "cache_size(-512)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		// The writer mostly appends (usage, audit) and updates single rows:
		// its working set is a few pages per index. Reads go to the read
		// pool, so 1 MiB of page cache (not SQLite's 2 MiB default) is plenty.
		q.Add("_pragma", "cache_size(-1024)")
		q.Set("_txlock", "immediate")
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	pool, err := sql.Open("sqlite", dsn+sep+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	pool.SetMaxOpenConns(conns)
	pool.SetMaxIdleConns(conns)
	if err := pool.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("connect to sqlite: %w", err), pool.Close())
	}
	return pool, nil
}

// SchemaDSN is what schema.New needs to migrate this database: the file
// path, or for ":memory:" the shared-cache URI that reaches the same
// in-memory database while this DB is open.
func (db *DB) SchemaDSN() string { return db.dsn }

// Close closes both pools and releases the lock file.
func (db *DB) Close() error {
	var errs []error
	if db.reader != db.writer {
		errs = append(errs, db.reader.Close())
	}
	errs = append(errs, db.writer.Close())
	if db.lock != nil {
		errs = append(errs, db.lock.release())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite: %w", err)
	}
	return nil
}

// Ping checks that both pools answer.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite writer: %w", err)
	}
	if err := db.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite reader: %w", err)
	}
	return nil
}

// Stats adds up both pools. BusyWaits counts writes that queued for the
// writer connection.
func (db *DB) Stats() store.PoolStats {
	w := db.writer.Stats()
	st := store.PoolStats{
		MaxConns:     1 + db.readConns,
		TotalConns:   w.OpenConnections,
		IdleConns:    w.Idle,
		InUseConns:   w.InUse,
		AcquireCount: w.WaitCount,
		AcquireWait:  w.WaitDuration,
		BusyWaits:    w.WaitCount,
	}
	if db.reader != db.writer {
		r := db.reader.Stats()
		st.TotalConns += r.OpenConnections
		st.IdleConns += r.Idle
		st.InUseConns += r.InUse
		st.AcquireCount += r.WaitCount
		st.AcquireWait += r.WaitDuration
	}
	return st
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// logSQL logs a statement and how long it took when Echo is on. Argument
// values are never logged: they include token hashes and API key
// ciphertext.
func (db *DB) logSQL(ctx context.Context, query string, start time.Time) {
	if db.echo {
		db.logger.InfoContext(ctx, "sql", "statement", query,
			"duration_ms", float64(time.Since(start).Microseconds())/1000)
	}
}

func (db *DB) exec(ctx context.Context, q querier, query string, args ...any) (sql.Result, error) {
	defer db.logSQL(ctx, query, time.Now())
	res, err := q.ExecContext(ctx, query, args...)
	return res, translate(err)
}

func (db *DB) query(ctx context.Context, q querier, query string, args ...any) (*sql.Rows, error) {
	defer db.logSQL(ctx, query, time.Now())
	rows, err := q.QueryContext(ctx, query, args...)
	return rows, translate(err)
}

// qualify prefixes every column of a comma-separated list with alias, for
// joins of tables whose columns share names.
func qualify(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// queryRow runs a single-row query and scans it; no row is ErrNotFound.
func (db *DB) queryRow(ctx context.Context, q querier, query string, args []any, dest ...any) error {
	defer db.logSQL(ctx, query, time.Now())
	return translate(q.QueryRowContext(ctx, query, args...).Scan(dest...))
}

// inTx runs fn in a transaction on the writer and commits it when fn
// succeeds.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return translate(err)
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, ignoreDone(tx.Rollback()))
	}
	return translate(tx.Commit())
}

// readTx runs fn in a read transaction so that a page and its total come
// from the same snapshot.
func (db *DB) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.reader.BeginTx(ctx, nil)
	if err != nil {
		return translate(err)
	}
	err = fn(tx)
	return errors.Join(err, ignoreDone(tx.Rollback()))
}

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}
