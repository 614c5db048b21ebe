package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// locks is the set of named locks held in this process. SQLite serves a
// single instance, so an in-process lock is cluster-wide.
type locks struct {
	mu   sync.Mutex
	held map[string]bool
}

// TryLock takes the named lock if no one in this process holds it.
func (db *DB) TryLock(_ context.Context, name string) (func(), bool, error) {
	db.locks.mu.Lock()
	defer db.locks.mu.Unlock()
	if db.locks.held[name] {
		return nil, false, nil
	}
	if db.locks.held == nil {
		db.locks.held = map[string]bool{}
	}
	db.locks.held[name] = true
	var once sync.Once
	release := func() {
		once.Do(func() {
			db.locks.mu.Lock()
			defer db.locks.mu.Unlock()
			delete(db.locks.held, name)
		})
	}
	return release, true, nil
}

// DeleteUsageBefore deletes the oldest usage rows created before t, at most
// limit of them, through the created_at index, and takes them out of
// usage_rollup in the same transaction.
func (db *DB) DeleteUsageBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("delete usage: limit %d must be positive", limit)
	}
	var n int64
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := db.query(ctx, tx, `DELETE FROM usage WHERE rowid IN
			(SELECT rowid FROM usage WHERE created_at < ? ORDER BY created_at LIMIT ?)
			RETURNING created_at, project_id, token_id, agent_token_id, model, cached, purpose, prompt_tokens,
				completion_tokens, total_tokens`, timeArg(t), limit)
		if err != nil {
			return err
		}
		var deleted []store.Usage
		for rows.Next() {
			var u store.Usage
			if err := rows.Scan(timeCol{&u.CreatedAt}, nullIDCol{&u.ProjectID}, nullIDCol{&u.TokenID},
				nullIDCol{&u.AgentTokenID}, &u.Model, &u.Cached, &u.Purpose, &u.PromptTokens, &u.CompletionTokens,
				&u.TotalTokens); err != nil {
				rows.Close()
				return err
			}
			deleted = append(deleted, u)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		n = int64(len(deleted))
		return db.subtractRollup(ctx, tx, store.RollUp(deleted))
	})
	if err != nil {
		return 0, fmt.Errorf("delete usage: %w", err)
	}
	return n, nil
}

// subtractRollup takes roll-up sums out of usage_rollup, removing the rows
// that count no request any more.
func (db *DB) subtractRollup(ctx context.Context, tx *sql.Tx, sums []store.UsageRollup) error {
	const (
		key = `granularity = ? AND bucket = ? AND project_id = ? AND token_id = ? AND agent_token_id = ?
			AND model = ? AND cached = ? AND purpose = ?`
		update = `UPDATE usage_rollup SET requests = requests - ?, prompt_tokens = prompt_tokens - ?,
			completion_tokens = completion_tokens - ?, total_tokens = total_tokens - ? WHERE ` + key
		remove = `DELETE FROM usage_rollup WHERE requests <= 0 AND ` + key
	)
	defer db.logSQL(ctx, update, time.Now())
	up, err := tx.PrepareContext(ctx, update)
	if err != nil {
		return translate(err)
	}
	defer up.Close()
	rm, err := tx.PrepareContext(ctx, remove)
	if err != nil {
		return translate(err)
	}
	defer rm.Close()
	for _, r := range sums {
		k := []any{r.Granularity, timeArg(r.Bucket), r.ProjectID, r.TokenID, r.AgentTokenID, r.Model, r.Cached, r.Purpose}
		if _, err := up.ExecContext(ctx, append([]any{r.Requests, r.PromptTokens, r.CompletionTokens, r.TotalTokens}, k...)...); err != nil {
			return translate(err)
		}
		if _, err := rm.ExecContext(ctx, k...); err != nil {
			return translate(err)
		}
	}
	return nil
}

// DeleteAuditBefore deletes the oldest audit events created before t, at
// most limit of them.
func (db *DB) DeleteAuditBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM audit_events WHERE rowid IN
		(SELECT rowid FROM audit_events WHERE created_at < ? ORDER BY created_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete audit events: %w", err)
	}
	return n, nil
}

// EnsurePartitions does nothing: SQLite has no partitions, and retention
// deletes rows in batches.
func (db *DB) EnsurePartitions(context.Context, time.Time, time.Time) (int, error) { return 0, nil }

// DropUsagePartitionsBefore does nothing (see EnsurePartitions).
func (db *DB) DropUsagePartitionsBefore(context.Context, time.Time) (int64, error) { return 0, nil }

// DropAuditPartitionsBefore does nothing (see EnsurePartitions).
func (db *DB) DropAuditPartitionsBefore(context.Context, time.Time) (int64, error) { return 0, nil }

// DeleteTokensExpiredBefore deletes the tokens that expired earliest before
// t, at most limit of them.
func (db *DB) DeleteTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM tokens WHERE rowid IN
		(SELECT rowid FROM tokens WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired tokens: %w", err)
	}
	return n, nil
}

// deleteBatch runs a bounded DELETE taking a cutoff and a limit on the
// writer. Keeping each batch small keeps the single writer free for the
// request path between batches.
func (db *DB) deleteBatch(ctx context.Context, stmt string, t time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("limit %d must be positive", limit)
	}
	res, err := db.exec(ctx, db.writer, stmt, timeArg(t), limit)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	return n, nil
}
