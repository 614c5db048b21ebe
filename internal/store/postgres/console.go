package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// UsageSeries sums usage_rollup rows by bucket and split key.
func (db *DB) UsageSeries(ctx context.Context, f store.UsageSeriesFilter) ([]store.UsagePoint, error) {
	if err := f.Check(); err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	key := map[string]string{"": `''`, store.SplitProject: `project_id`, store.SplitModel: `model`, store.SplitToken: `token_id`}[f.Split]
	var q query
	q.where(`granularity = ?`, f.Bucket)
	q.where(`bucket >= ?`, f.From)
	q.where(`bucket < ?`, f.To)
	// The roll-up holds IDs as text in canonical form.
	if f.ProjectID != "" {
		q.where(`project_id = ?`, canonicalUUID(f.ProjectID))
	}
	if f.TokenID != "" {
		q.where(`token_id = ?`, canonicalUUID(f.TokenID))
	}
	stmt := `SELECT bucket, ` + key + `, sum(requests)::bigint, sum(prompt_tokens)::bigint,
		sum(completion_tokens)::bigint, sum(total_tokens)::bigint
		FROM usage_rollup` + q.clause() + ` GROUP BY 1, 2 ORDER BY 1, 2`
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, stmt, q.args...)
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", translate(err))
	}
	points, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.UsagePoint, error) {
		var p store.UsagePoint
		err := r.Scan(&p.Bucket, &p.Key, &p.Requests, &p.PromptTokens, &p.CompletionTokens, &p.TotalTokens)
		p.Bucket = p.Bucket.UTC()
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", translate(err))
	}
	return points, nil
}

const consoleSessionCols = `id_hash, method, subject, token_mac, created_at, last_seen_at, expires_at`

// CreateConsoleSession inserts s.
func (db *DB) CreateConsoleSession(ctx context.Context, s *store.ConsoleSession) error {
	err := db.execOne(ctx, `INSERT INTO console_sessions (`+consoleSessionCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		s.IDHash, s.Method, s.Subject, s.TokenMAC, s.CreatedAt, s.LastSeenAt, s.ExpiresAt)
	if err != nil {
		return fmt.Errorf("create console session: %w", err)
	}
	return nil
}

// GetConsoleSession returns the session with idHash.
func (db *DB) GetConsoleSession(ctx context.Context, idHash string) (*store.ConsoleSession, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	var s store.ConsoleSession
	err = c.QueryRow(ctx, `SELECT `+consoleSessionCols+` FROM console_sessions WHERE id_hash = $1`, idHash).
		Scan(&s.IDHash, &s.Method, &s.Subject, &s.TokenMAC, &s.CreatedAt, &s.LastSeenAt, &s.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("load console session: %w", translate(err))
	}
	s.CreatedAt, s.LastSeenAt, s.ExpiresAt = s.CreatedAt.UTC(), s.LastSeenAt.UTC(), s.ExpiresAt.UTC()
	return &s, nil
}

// TouchConsoleSession moves last_seen_at forward.
func (db *DB) TouchConsoleSession(ctx context.Context, idHash string, at time.Time) error {
	if err := db.execOne(ctx, `UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2`,
		idHash, at); err != nil {
		return fmt.Errorf("touch console session: %w", err)
	}
	return nil
}

// DeleteConsoleSession deletes the session with idHash.
func (db *DB) DeleteConsoleSession(ctx context.Context, idHash string) error {
	if err := db.execOne(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}

// DeleteConsoleSessionsBefore deletes expired and idle sessions.
func (db *DB) DeleteConsoleSessionsBefore(ctx context.Context, expired, idle time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("delete console sessions: limit %d must be positive", limit)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash IN
		(SELECT id_hash FROM console_sessions WHERE expires_at < $1 OR last_seen_at < $2 LIMIT $3)`, expired, idle, limit)
	if err != nil {
		return 0, fmt.Errorf("delete console sessions: %w", translate(err))
	}
	return tag.RowsAffected(), nil
}

// execOne runs one statement on a pooled connection.
func (db *DB) execOne(ctx context.Context, stmt string, args ...any) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, stmt, args...); err != nil {
		return translate(err)
	}
	return nil
}
