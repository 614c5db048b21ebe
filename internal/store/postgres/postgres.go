// Package postgres is the PostgreSQL implementation of store.Store, on a
// pgxpool connection pool.
//
// Every operation first acquires a connection with a deadline of
// Options.PoolTimeout (the deadline covers only the wait for a connection,
// not the statement); when the pool stays full for that long the operation
// fails with an error wrapping store.ErrPoolExhausted. Driver errors are
// translated once, in translate, into the store sentinels.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// Defaults applied by Open to zero Options fields.
const (
	DefaultPoolSize        = 5
	DefaultPoolTimeout     = 30 * time.Second
	DefaultConnMaxLifetime = time.Hour
)

// overflowIdleTime is how long a connection above the persistent set may sit
// idle before the pool closes it.
const overflowIdleTime = time.Minute

// Options configure Open.
type Options struct {
	// URL is a postgres:// URL.
	URL string
	// PoolSize is the number of persistent connections (DefaultPoolSize
	// when zero).
	PoolSize int
	// MaxOverflow is the number of extra connections opened under load;
	// the pool never holds more than PoolSize+MaxOverflow.
	MaxOverflow int
	// PoolTimeout is how long an operation waits for a free connection
	// (DefaultPoolTimeout when zero).
	PoolTimeout time.Duration
	// MaxIdleConns is how many connections stay open while the database
	// is idle (0 to PoolSize+MaxOverflow): pgxpool's MinConns, opened at
	// start-up and kept; connections beyond it close after a minute unused.
	// (pgxpool's MinIdleConns would keep that many idle beside the busy
	// ones, opening more under load, and its idle trimming ignores it.)
	MaxIdleConns int
	// ConnMaxLifetime recycles connections older than this
	// (DefaultConnMaxLifetime when zero).
	ConnMaxLifetime time.Duration
	// Echo logs every statement with its duration, never its arguments.
	Echo bool
	// EchoPool logs pool events: connect, acquire, release, close.
	EchoPool bool
	// Tracer, when set, receives every statement alongside the Echo
	// logger (for example an OpenTelemetry tracer).
	Tracer pgx.QueryTracer
	// Logger receives Echo and EchoPool lines; nil discards them.
	Logger *slog.Logger
}

// DB is a store.Store on a PostgreSQL connection pool. It is safe for
// concurrent use; the caller closes it.
type DB struct {
	pool        *pgxpool.Pool
	poolSize    int
	maxOverflow int
	poolTimeout time.Duration
	exhausted   atomic.Int64
}

var _ store.Store = (*DB)(nil)

// Open creates the pool and checks that the database answers within
// PoolTimeout; an unreachable database is an error. It does not migrate.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.PoolSize == 0 {
		opts.PoolSize = DefaultPoolSize
	}
	if opts.PoolTimeout == 0 {
		opts.PoolTimeout = DefaultPoolTimeout
	}
	if opts.ConnMaxLifetime == 0 {
		opts.ConnMaxLifetime = DefaultConnMaxLifetime
	}
	if opts.PoolSize < 1 || opts.MaxOverflow < 0 || opts.PoolTimeout < 0 || opts.ConnMaxLifetime < 0 ||
		opts.MaxIdleConns < 0 || opts.MaxIdleConns > opts.PoolSize+opts.MaxOverflow {
		return nil, fmt.Errorf("invalid pool options (pool_size=%d, max_overflow=%d, max_idle_conns=%d, pool_timeout=%s, conn_max_lifetime=%s)",
			opts.PoolSize, opts.MaxOverflow, opts.MaxIdleConns, opts.PoolTimeout, opts.ConnMaxLifetime)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = int32(opts.PoolSize + opts.MaxOverflow)
	cfg.MinConns = int32(opts.MaxIdleConns)
	cfg.MaxConnIdleTime = overflowIdleTime
	cfg.MaxConnLifetime = opts.ConnMaxLifetime

	var tracers []pgx.QueryTracer
	if opts.Echo {
		tracers = append(tracers, &echoTracer{logger: logger})
	}
	if opts.Tracer != nil {
		tracers = append(tracers, opts.Tracer)
	}
	switch len(tracers) {
	case 0:
	case 1:
		cfg.ConnConfig.Tracer = tracers[0]
	default:
		cfg.ConnConfig.Tracer = multitracer.New(tracers...)
	}
	if opts.EchoPool {
		logPoolEvents(cfg, logger)
	}

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create database pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, opts.PoolTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return &DB{
		pool:        pool,
		poolSize:    opts.PoolSize,
		maxOverflow: opts.MaxOverflow,
		poolTimeout: opts.PoolTimeout,
	}, nil
}

// Pool returns the underlying pool, for LISTEN/NOTIFY and advisory locks.
// Connections taken from it directly bypass the pool timeout.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if err := c.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Stats reports pool figures for /metrics.
func (db *DB) Stats() store.PoolStats {
	s := db.pool.Stat()
	return store.PoolStats{
		MaxConns:      int(s.MaxConns()),
		TotalConns:    int(s.TotalConns()),
		IdleConns:     int(s.IdleConns()),
		InUseConns:    int(s.AcquiredConns()),
		AcquireCount:  s.AcquireCount(),
		AcquireWait:   s.AcquireDuration(),
		ExhaustedErrs: db.exhausted.Load(),
	}
}

// Close closes every connection, waiting for acquired ones to be released.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// acquire takes a connection, waiting at most the pool timeout. The
// deadline applies to the wait only: statements run under the caller's ctx.
func (db *DB) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, db.poolTimeout)
	defer cancel()
	c, err := db.pool.Acquire(actx)
	if err == nil {
		return c, nil
	}
	if ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		if s := db.pool.Stat(); s.TotalConns() >= s.MaxConns() {
			db.exhausted.Add(1)
			return nil, fmt.Errorf("%w (waited %s; pool_size=%d, max_overflow=%d)",
				store.ErrPoolExhausted, db.poolTimeout, db.poolSize, db.maxOverflow)
		}
		return nil, fmt.Errorf("acquire database connection: no connection within %s: %w", db.poolTimeout, err)
	}
	return nil, fmt.Errorf("acquire database connection: %w", err)
}

// translate maps driver errors onto the store sentinels; other errors pass
// through unchanged.
func translate(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.UniqueViolation, pgerrcode.ForeignKeyViolation:
			return fmt.Errorf("%w (constraint %s)", store.ErrConflict, pgErr.ConstraintName)
		case pgerrcode.InvalidTextRepresentation:
			return store.ErrNotFound
		}
	}
	return err
}

// isUUID reports whether s is an ID PostgreSQL can store in a uuid column;
// a malformed ID can match no record.
func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil
}

// optionalUUID converts an optional ID to a uuid parameter, "" being NULL.
// pgtype.UUID encodes straight to the binary format; uuid.UUID would go
// through driver.Valuer and text, which costs COPY batches several times
// more CPU.
func optionalUUID(s string) (pgtype.UUID, error) {
	if s == "" {
		return pgtype.UUID{}, nil
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return pgtype.UUID{}, fmt.Errorf("invalid id %q: %w", s, err)
	}
	return pgtype.UUID{Bytes: u, Valid: true}, nil
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

// utc converts an optional time read from the database to UTC.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// query accumulates WHERE conditions and their positional arguments.
type query struct {
	conds []string
	args  []any
}

// where adds a condition; each "?" in cond stands for arg.
func (q *query) where(cond string, arg any) {
	q.args = append(q.args, arg)
	q.conds = append(q.conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(q.args))))
}

// clause renders the WHERE clause, or "" without conditions.
func (q *query) clause() string {
	if len(q.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(q.conds, " AND ")
}

// page renders LIMIT/OFFSET for p (nothing when PageSize is not positive)
// and returns the arguments to go with the whole statement.
func (q *query) page(p store.Page) (string, []any) {
	args := append([]any(nil), q.args...)
	if p.PageSize <= 0 {
		return "", args
	}
	n := len(args)
	args = append(args, p.PageSize, (max(p.Page, 1)-1)*p.PageSize)
	return fmt.Sprintf(" LIMIT $%d OFFSET $%d", n+1, n+2), args
}
