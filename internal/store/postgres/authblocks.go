package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// upsertAuthBlock merges one block into its row by the rule documented on
// store.Store.RecordAuthBlocks.
const upsertAuthBlock = `INSERT INTO auth_rate_limits AS t (identifier, failed_attempts, last_attempt_at, blocked_until)
	VALUES ($1, $2, $3, $4)
	ON CONFLICT (identifier) DO UPDATE SET
		failed_attempts = CASE
			WHEN t.blocked_until IS NULL OR excluded.blocked_until > t.blocked_until THEN excluded.failed_attempts
			WHEN excluded.blocked_until = t.blocked_until THEN greatest(t.failed_attempts, excluded.failed_attempts)
			ELSE t.failed_attempts END,
		last_attempt_at = greatest(t.last_attempt_at, excluded.last_attempt_at),
		blocked_until = greatest(t.blocked_until, excluded.blocked_until)`

// RecordAuthBlocks upserts blocks in one transaction, sent as one batch, in
// identifier order. A batch may name an identifier more than once: one
// statement per block applies the merge rule to each in turn.
func (db *DB) RecordAuthBlocks(ctx context.Context, blocks []store.AuthBlock) error {
	if len(blocks) == 0 {
		return nil
	}
	sorted := slices.SortedStableFunc(slices.Values(blocks), func(a, b store.AuthBlock) int {
		return cmp.Compare(a.Identifier, b.Identifier)
	})
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, blk := range sorted {
			b.Queue(upsertAuthBlock, blk.Identifier, blk.FailedAttempts, blk.LastAttemptAt, blk.BlockedUntil)
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("record auth blocks: %w", translate(err))
	}
	return nil
}

// ActiveAuthBlocks returns the blocks that end after now, latest end first.
func (db *DB) ActiveAuthBlocks(ctx context.Context, now time.Time, limit int) ([]store.AuthBlock, error) {
	if limit < 1 {
		return nil, fmt.Errorf("load auth blocks: limit %d must be positive", limit)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, `SELECT identifier, failed_attempts, last_attempt_at, blocked_until
		FROM auth_rate_limits WHERE blocked_until > $1 ORDER BY blocked_until DESC, identifier LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("load auth blocks: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuthBlock, error) {
		var b store.AuthBlock
		err := row.Scan(&b.Identifier, &b.FailedAttempts, &b.LastAttemptAt, &b.BlockedUntil)
		b.LastAttemptAt, b.BlockedUntil = b.LastAttemptAt.UTC(), b.BlockedUntil.UTC()
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("load auth blocks: %w", translate(err))
	}
	return out, nil
}

// DeleteAuthBlocksBefore deletes the blocks that ended earliest before t,
// at most limit of them.
func (db *DB) DeleteAuthBlocksBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM auth_rate_limits WHERE identifier IN
		(SELECT identifier FROM auth_rate_limits WHERE coalesce(blocked_until, last_attempt_at) < $1
		 ORDER BY coalesce(blocked_until, last_attempt_at) LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete auth blocks: %w", err)
	}
	return n, nil
}
