package postgres

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// echoTracer logs each statement and COPY with its duration. It never logs
// argument values, and of a PostgreSQL error only the SQLSTATE, since error
// messages can quote values.
type echoTracer struct {
	logger *slog.Logger
}

type echoStartKey struct{}

type echoStart struct {
	statement string
	at        time.Time
}

// TraceQueryStart remembers the statement and its start time.
func (t *echoTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, echoStartKey{}, echoStart{statement: data.SQL, at: time.Now()})
}

// TraceQueryEnd logs the statement.
func (t *echoTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	t.log(ctx, data.CommandTag.RowsAffected(), data.Err)
}

// TraceCopyFromStart remembers the COPY and its start time.
func (t *echoTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	stmt := "COPY " + data.TableName.Sanitize() + " (" + strings.Join(data.ColumnNames, ", ") + ") FROM STDIN"
	return context.WithValue(ctx, echoStartKey{}, echoStart{statement: stmt, at: time.Now()})
}

// TraceCopyFromEnd logs the COPY.
func (t *echoTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromEndData) {
	t.log(ctx, data.CommandTag.RowsAffected(), data.Err)
}

func (t *echoTracer) log(ctx context.Context, rows int64, err error) {
	start, ok := ctx.Value(echoStartKey{}).(echoStart)
	if !ok {
		return
	}
	attrs := []slog.Attr{
		slog.String("statement", start.statement),
		slog.Float64("duration_ms", float64(time.Since(start.at).Microseconds())/1000),
		slog.Int64("rows", rows),
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			attrs = append(attrs, slog.String("sqlstate", pgErr.Code))
		} else {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
	}
	t.logger.LogAttrs(ctx, slog.LevelInfo, "sql", attrs...)
}

// logPoolEvents installs pool hooks that log connect, acquire, release and
// close, each with the backend pid.
func logPoolEvents(cfg *pgxpool.Config, logger *slog.Logger) {
	event := func(ctx context.Context, name string, c *pgx.Conn) {
		logger.LogAttrs(ctx, slog.LevelInfo, "db pool",
			slog.String("event", name), slog.Uint64("pid", uint64(c.PgConn().PID())))
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		event(ctx, "connect", c)
		return nil
	}
	cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		event(ctx, "acquire", c)
		return true, nil
	}
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		event(context.Background(), "release", c)
		return true
	}
	cfg.BeforeClose = func(c *pgx.Conn) {
		event(context.Background(), "close", c)
	}
}
