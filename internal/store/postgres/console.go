package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// seriesLayouts are the bucket strings UsageSeries selects, by bucket.
var seriesLayouts = map[string]struct{ expr, layout string }{
	store.BucketHour: {`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24')`, "2006-01-02T15"},
	store.BucketDay:  {`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`, "2006-01-02"},
}

// UsageSeries aggregates usage rows by bucket and split key.
func (db *DB) UsageSeries(ctx context.Context, f store.UsageSeriesFilter) ([]store.UsagePoint, error) {
	b, ok := seriesLayouts[f.Bucket]
	if !ok {
		return nil, fmt.Errorf("usage series: unknown bucket %q", f.Bucket)
	}
	var key string
	switch f.Split {
	case "":
		key = `''`
	case store.SplitProject:
		key = `coalesce(project_id::text, '')`
	case store.SplitModel:
		key = `model`
	case store.SplitToken:
		key = `coalesce(token_id::text, '')`
	default:
		return nil, fmt.Errorf("usage series: unknown split %q", f.Split)
	}
	var q query
	for _, idf := range []struct{ col, id string }{{"project_id", f.ProjectID}, {"token_id", f.TokenID}} {
		if idf.id == "" {
			continue
		}
		if !isUUID(idf.id) {
			return nil, nil
		}
		q.where(idf.col+` = ?`, idf.id)
	}
	if !f.From.IsZero() {
		q.where(`created_at >= ?`, f.From)
	}
	if !f.To.IsZero() {
		q.where(`created_at < ?`, f.To)
	}
	stmt := `SELECT ` + b.expr + `, ` + key + `, count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0)
		FROM usage` + q.clause() + ` GROUP BY 1, 2 ORDER BY 1, 2`
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
		var (
			p      store.UsagePoint
			bucket string
		)
		if err := r.Scan(&bucket, &p.Key, &p.Requests, &p.PromptTokens, &p.CompletionTokens, &p.TotalTokens); err != nil {
			return p, err
		}
		var err error
		p.Bucket, err = time.Parse(b.layout, bucket)
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
