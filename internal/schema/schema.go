// Package schema applies and inspects the embedded migrations of
// db/migrations with golang-migrate, for both dialects, and implements the
// start-up schema rule of SPEC §5.
package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	migratesqlite "github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	migrations "github.com/llmproxy/llm-proxy/db/migrations"
)

// Drivers.
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

// upgradeLockKey is the PostgreSQL advisory lock (scoped to the database)
// held around every schema change. golang-migrate takes its own advisory
// lock too, but gives up after 15 s and ignores the context; this one waits
// for as long as ctx allows, so several `migrate up` jobs or auto-migrating
// replicas started together queue behind the first instead of failing.
const upgradeLockKey int64 = 0x6c6c6d2d70726f78 // "llm-prox"

// Migrator applies the migrations of one dialect to one database. It is not
// safe for concurrent use; separate Migrators (and processes) on the same
// PostgreSQL database are serialised by advisory locks.
type Migrator struct {
	driver string
	m      *migrate.Migrate
	drv    database.Driver
	db     *sql.DB
	logger *slog.Logger
}

// New opens a dedicated connection to the database and prepares the
// migrations of driver ("postgres": dsn is a postgres:// URL; "sqlite": dsn
// is a file path or ":memory:"). It creates the version bookkeeping table
// if missing. The caller closes the Migrator. A nil logger discards logs.
func New(ctx context.Context, driver, dsn string, logger *slog.Logger) (*Migrator, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var (
		db  *sql.DB
		drv database.Driver
		err error
	)
	switch driver {
	case DriverPostgres:
		cfg, perr := pgxConnConfig(dsn)
		if perr != nil {
			return nil, perr
		}
		db = stdlib.OpenDB(*cfg)
		if err = db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("connect to database: %w", err)
		}
		drv, err = migratepgx.WithInstance(db, &migratepgx.Config{})
	case DriverSQLite:
		db, err = sql.Open("sqlite", sqliteDSN(dsn))
		if err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		db.SetMaxOpenConns(1)
		drv, err = migratesqlite.WithInstance(db, &migratesqlite.Config{})
	default:
		return nil, fmt.Errorf("unknown database driver %q", driver)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	sub, err := fs.Sub(migrations.FS, driver)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	src, err := iofs.New(sub, ".")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, driver, drv)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	m.Log = migrateLog{logger: logger}
	return &Migrator{driver: driver, m: m, drv: drv, db: db, logger: logger}, nil
}

// Up applies every pending migration. On PostgreSQL it first waits (bounded
// by ctx) for the advisory lock, so concurrent callers apply each migration
// exactly once and all succeed.
func (m *Migrator) Up(ctx context.Context) error {
	return m.change(ctx, "migrate up", m.m.Up)
}

// Down rolls back the n most recent migrations (n >= 1). Rolling back more
// migrations than are applied is an error, and nothing is rolled back past
// version 0.
func (m *Migrator) Down(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("migrate down: step count %d is not positive", n)
	}
	return m.change(ctx, "migrate down", func() error { return m.m.Steps(-n) })
}

// Goto migrates up or down to version v; v = 0 rolls every migration back.
func (m *Migrator) Goto(ctx context.Context, v uint) error {
	if v == 0 {
		return m.change(ctx, "migrate goto 0", m.m.Down)
	}
	return m.change(ctx, fmt.Sprintf("migrate goto %d", v), func() error { return m.m.Migrate(v) })
}

// Force records version v as applied and clean without running any
// migration, for recovery after a manual fix of a dirty schema. v = -1 (or
// 0) records that no migration is applied.
func (m *Migrator) Force(ctx context.Context, v int) error {
	if v == 0 {
		v = database.NilVersion
	}
	if v < database.NilVersion {
		return fmt.Errorf("migrate force: invalid version %d", v)
	}
	return m.change(ctx, fmt.Sprintf("migrate force %d", v), func() error { return m.m.Force(v) })
}

// Close releases the database connection.
func (m *Migrator) Close() error {
	srcErr, dbErr := m.m.Close()
	return errors.Join(srcErr, dbErr)
}

// change runs op while holding the upgrade lock; "no change" is success.
// When the schema is dirty afterwards the error includes a *SchemaError.
func (m *Migrator) change(ctx context.Context, what string, op func() error) error {
	unlock, err := m.lock(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err = op()
	if uerr := unlock(); uerr != nil {
		m.logger.Warn("release schema lock", "error", uerr)
	}
	if err == nil || errors.Is(err, migrate.ErrNoChange) {
		return nil
	}
	// A dirty schema, found or left behind, gets the recovery instructions.
	if st, serr := m.Status(context.WithoutCancel(ctx)); serr == nil && st.Dirty {
		if errors.As(err, new(migrate.ErrDirty)) {
			return fmt.Errorf("%s: %w", what, &SchemaError{Status: st, Driver: m.driver})
		}
		return fmt.Errorf("%s: %w; %w", what, err, &SchemaError{Status: st, Driver: m.driver})
	}
	return fmt.Errorf("%s: %w", what, err)
}

// lock takes the upgrade advisory lock on its own connection (PostgreSQL
// only; SQLite supports a single process) and returns its release.
func (m *Migrator) lock(ctx context.Context) (func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.driver != DriverPostgres {
		return func() error { return nil }, nil
	}
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("take schema lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", upgradeLockKey); err != nil {
		conn.Close()
		return nil, fmt.Errorf("take schema lock: %w", err)
	}
	return func() error {
		_, err := conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", upgradeLockKey)
		return errors.Join(err, conn.Close())
	}, nil
}

// migrateLog forwards golang-migrate's progress lines ("Finished 1/u
// create_core (read 1ms, ran 9ms)") to slog.
type migrateLog struct{ logger *slog.Logger }

func (l migrateLog) Printf(format string, v ...any) {
	l.logger.Info("migration", "detail", strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l migrateLog) Verbose() bool { return false }
