package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// upsertAuthBlock merges one block into its row by the rule documented on
// store.Store.RecordAuthBlocks. Times are fixed-width text, so text order
// is time order.
const upsertAuthBlock = `INSERT INTO auth_rate_limits (identifier, failed_attempts, last_attempt_at, blocked_until)
	VALUES (?, ?, ?, ?)
	ON CONFLICT (identifier) DO UPDATE SET
		failed_attempts = CASE
			WHEN auth_rate_limits.blocked_until IS NULL OR excluded.blocked_until > auth_rate_limits.blocked_until
				THEN excluded.failed_attempts
			WHEN excluded.blocked_until = auth_rate_limits.blocked_until
				THEN max(auth_rate_limits.failed_attempts, excluded.failed_attempts)
			ELSE auth_rate_limits.failed_attempts END,
		last_attempt_at = max(auth_rate_limits.last_attempt_at, excluded.last_attempt_at),
		blocked_until = CASE
			WHEN auth_rate_limits.blocked_until IS NULL OR excluded.blocked_until > auth_rate_limits.blocked_until
				THEN excluded.blocked_until
			ELSE auth_rate_limits.blocked_until END`

// RecordAuthBlocks upserts blocks in one transaction, in identifier order.
func (db *DB) RecordAuthBlocks(ctx context.Context, blocks []store.AuthBlock) error {
	if len(blocks) == 0 {
		return nil
	}
	sorted := slices.SortedStableFunc(slices.Values(blocks), func(a, b store.AuthBlock) int {
		return cmp.Compare(a.Identifier, b.Identifier)
	})
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		for _, b := range sorted {
			if _, err := db.exec(ctx, tx, upsertAuthBlock, b.Identifier, b.FailedAttempts,
				timeArg(b.LastAttemptAt), timeArg(b.BlockedUntil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record auth blocks: %w", err)
	}
	return nil
}

// ActiveAuthBlocks returns the blocks that end after now, latest end first.
func (db *DB) ActiveAuthBlocks(ctx context.Context, now time.Time, limit int) ([]store.AuthBlock, error) {
	if limit < 1 {
		return nil, fmt.Errorf("load auth blocks: limit %d must be positive", limit)
	}
	rows, err := db.query(ctx, db.reader, `SELECT identifier, failed_attempts, last_attempt_at, blocked_until
		FROM auth_rate_limits WHERE blocked_until > ? ORDER BY blocked_until DESC, identifier LIMIT ?`,
		timeArg(now), limit)
	if err != nil {
		return nil, fmt.Errorf("load auth blocks: %w", err)
	}
	defer rows.Close()
	var out []store.AuthBlock
	for rows.Next() {
		var b store.AuthBlock
		if err := rows.Scan(&b.Identifier, &b.FailedAttempts, timeCol{&b.LastAttemptAt}, timeCol{&b.BlockedUntil}); err != nil {
			return nil, fmt.Errorf("load auth blocks: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load auth blocks: %w", translate(err))
	}
	return out, nil
}

// DeleteAuthBlocksBefore deletes the blocks that ended earliest before t,
// at most limit of them.
func (db *DB) DeleteAuthBlocksBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM auth_rate_limits WHERE rowid IN
		(SELECT rowid FROM auth_rate_limits WHERE coalesce(blocked_until, last_attempt_at) < ?
		 ORDER BY coalesce(blocked_until, last_attempt_at) LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete auth blocks: %w", err)
	}
	return n, nil
}
