package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"
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
// limit of them, through the created_at index.
func (db *DB) DeleteUsageBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM usage WHERE rowid IN
		(SELECT rowid FROM usage WHERE created_at < ? ORDER BY created_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete usage: %w", err)
	}
	return n, nil
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
