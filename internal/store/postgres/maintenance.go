package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// unlockTimeout bounds the pg_advisory_unlock of a lock release.
const unlockTimeout = 5 * time.Second

// TryLock takes a session advisory lock on hashtext(name) without waiting.
// The lock lives on a connection taken from the pool for as long as it is
// held, so the pool has one connection fewer meanwhile. release unlocks
// and returns the connection; if the unlock fails the connection is closed
// instead, which drops the lock with the session.
func (db *DB) TryLock(ctx context.Context, name string) (func(), bool, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", name, err)
	}
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, name).Scan(&ok); err != nil {
		// The lock may have been granted before the error: never give the
		// session back to the pool.
		discard(c)
		return nil, false, fmt.Errorf("lock %s: %w", name, translate(err))
	}
	if !ok {
		c.Release()
		return nil, false, nil
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
			defer cancel()
			var unlocked bool
			if err := c.QueryRow(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, name).Scan(&unlocked); err != nil || !unlocked {
				discard(c)
				return
			}
			c.Release()
		})
	}
	return release, true, nil
}

// discard closes c and hands it back, so the pool destroys it instead of
// reusing a session that may still hold an advisory lock.
func discard(c *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	_ = c.Conn().Close(ctx)
	c.Release()
}

// DeleteUsageBefore deletes the oldest usage rows created before t, at most
// limit of them, through the created_at index, and takes them out of
// usage_rollup in the same transaction. With partitions dropped whole
// (DropUsagePartitionsBefore), what is left for it are the rows of the
// default partition.
func (db *DB) DeleteUsageBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("delete usage: limit %d must be positive", limit)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	var deleted []store.Usage
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM usage WHERE (id, created_at) IN
			(SELECT id, created_at FROM usage WHERE created_at < $1 ORDER BY created_at LIMIT $2)
			RETURNING created_at, coalesce(project_id::text, ''), coalesce(token_id::text, ''),
				coalesce(agent_token_id::text, ''), model, cached, purpose, prompt_tokens, completion_tokens, total_tokens`,
			t, limit)
		if err != nil {
			return err
		}
		deleted, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Usage, error) {
			var u store.Usage
			err := r.Scan(&u.CreatedAt, &u.ProjectID, &u.TokenID, &u.AgentTokenID, &u.Model, &u.Cached, &u.Purpose,
				&u.PromptTokens, &u.CompletionTokens, &u.TotalTokens)
			return u, err
		})
		if err != nil || len(deleted) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, subtractRollup, rollupArrays(store.RollUp(deleted))...)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete usage: %w", translate(err))
	}
	return int64(len(deleted)), nil
}

// DeleteAuditBefore deletes the oldest audit events created before t, at
// most limit of them.
func (db *DB) DeleteAuditBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM audit_events WHERE id IN
		(SELECT id FROM audit_events WHERE created_at < $1 ORDER BY created_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete audit events: %w", err)
	}
	return n, nil
}

// DeleteTokensExpiredBefore deletes the tokens that expired earliest before
// t, at most limit of them.
func (db *DB) DeleteTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM tokens WHERE id IN
		(SELECT id FROM tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired tokens: %w", err)
	}
	return n, nil
}

// deleteBatch runs a bounded DELETE taking a cutoff and a limit. Each
// batch is its own short transaction, so row locks are held only briefly
// and the table itself is never locked.
func (db *DB) deleteBatch(ctx context.Context, stmt string, t time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("limit %d must be positive", limit)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, stmt, t, limit)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}
