package invalidate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NewPostgres returns a Bus that fans out with pg_notify and LISTEN on
// channel, for deployments without Redis. channel is case-sensitive and at
// most 63 bytes. Notifications are published through pool; the
// subscription holds a dedicated connection of its own, opened with the
// pool's configuration but outside it. The caller closes pool after Run
// returns.
func NewPostgres(pool *pgxpool.Pool, channel string, t Target, logger *slog.Logger) *Bus {
	return newBus(&pgTransport{pool: pool, channel: channel}, t, logger)
}

type pgTransport struct {
	pool    *pgxpool.Pool
	channel string
}

func (p *pgTransport) name() string { return "postgres" }

func (p *pgTransport) publish(ctx context.Context, msg string) error {
	if _, err := p.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, p.channel, msg); err != nil {
		return fmt.Errorf("notify postgres: %w", err)
	}
	return nil
}

func (p *pgTransport) listen(ctx context.Context, up func(), deliver func(string)) error {
	cfg := p.pool.Config().ConnConfig
	// An expired wait must only interrupt the read, not send the server a
	// cancel request on a fresh connection every healthInterval.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	// Connecting and subscribing are bounded, so that a server that
	// accepts connections but never answers counts as down.
	sctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(sctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(sctx, "LISTEN "+pgx.Identifier{p.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen on postgres: %w", err)
	}
	up()
	for {
		wctx, cancel := context.WithTimeout(ctx, healthInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			deliver(n.Payload)
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			// Silent for a while: make sure the connection still answers.
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("probe postgres listener: %w", err)
			}
		default:
			return fmt.Errorf("wait for postgres notification: %w", err)
		}
	}
}
