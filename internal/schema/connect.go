package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Connect is New that waits for the database: while the connection fails for
// a reason that can pass (refused, server starting up, too many clients,
// database not created yet) it retries until wait elapses, then returns the
// last error (wait <= 0 tries once). Bad URLs and rejected credentials fail at once.
func Connect(ctx context.Context, driver, dsn string, wait time.Duration, logger *slog.Logger) (*Migrator, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if wait <= 0 {
		return New(ctx, driver, dsn, logger)
	}
	const interval = time.Second
	deadline := time.Now().Add(wait)
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithDeadline(ctx, deadline)
		m, err := New(attemptCtx, driver, dsn, logger)
		cancel()
		if err == nil {
			return m, nil
		}
		if !transient(err) || ctx.Err() != nil || time.Until(deadline) < interval {
			if attempt > 1 {
				return nil, fmt.Errorf("database not ready after %s: %w", wait, err)
			}
			return nil, err
		}
		logger.Warn("database not ready, retrying", "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for database: %w", ctx.Err())
		case <-time.After(interval):
		}
	}
}

// transient reports whether a connection error can go away by itself.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "57"), // server starting up / shutting down
			strings.HasPrefix(pgErr.Code, "53"), // too many connections, out of memory
			pgErr.Code == "3D000":               // database not created yet
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr)
}
