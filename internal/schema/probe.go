package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Probe reads the recorded schema version while the proxy runs, for its
// readiness check: a schema rolled back (`migrate down`) or left dirty by a
// failed migration after start-up must take the replica out of service.
// Unlike a Migrator it never creates the version table and never takes a
// lock (a migration in progress holds it), keeps at most one connection of
// its own, and reconnects by itself after an outage. A successful read is
// reused for interval, so frequent probes cost one query per interval;
// failures are not remembered. It is safe for concurrent use; Close
// releases the connection.
type Probe struct {
	driver   string
	db       *sql.DB
	latest   uint
	interval time.Duration

	mu     sync.Mutex
	readAt time.Time // of the last successful read; zero before it
	status Status
}

// NewProbe prepares a probe of the database at dsn (as for New). It does not
// connect: the first Status does.
func NewProbe(driver, dsn string, interval time.Duration) (*Probe, error) {
	latest, err := Latest(driver)
	if err != nil {
		return nil, err
	}
	var db *sql.DB
	switch driver {
	case DriverPostgres:
		cfg, err := pgxConnConfig(dsn)
		if err != nil {
			return nil, err
		}
		db = stdlib.OpenDB(*cfg)
	case DriverSQLite:
		if db, err = sql.Open("sqlite", sqliteDSN(dsn)); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	// An idle connection outlives a few intervals, not a database restart
	// that went unnoticed.
	db.SetConnMaxIdleTime(max(3*interval, time.Minute))
	return &Probe{driver: driver, db: db, latest: latest, interval: interval}, nil
}

// Status returns the recorded schema state: the last successful read when
// it is younger than the interval, a fresh read otherwise. An error means
// the state is unknown (the database is unreachable, or the read failed).
func (p *Probe) Status(ctx context.Context) (Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.readAt.IsZero() && time.Since(p.readAt) < p.interval {
		return p.status, nil
	}
	var (
		version int64
		dirty   bool
	)
	// golang-migrate's table, as its drivers read it (see Migrator.Status).
	err := p.db.QueryRowContext(ctx, "SELECT version, dirty FROM schema_migrations LIMIT 1").Scan(&version, &dirty)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, sql.ErrNoRows), errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		p.status = Status{Latest: p.latest, None: true}
	case err != nil:
		return Status{}, fmt.Errorf("read schema version: %w", err)
	case version < 0:
		p.status = Status{Latest: p.latest, None: true, Dirty: dirty}
	default:
		p.status = Status{Current: uint(version), Dirty: dirty, Latest: p.latest}
	}
	p.readAt = time.Now()
	return p.status, nil
}

// Close releases the probe's connection.
func (p *Probe) Close() error {
	return p.db.Close()
}
