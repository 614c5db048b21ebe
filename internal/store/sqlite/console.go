package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// seriesLayouts are the bucket strings seriesBucket produces, by bucket.
var seriesLayouts = map[string]struct{ expr, layout string }{
	store.BucketHour: {"substr(created_at, 1, 13)", "2006-01-02T15"},
	store.BucketDay:  {"substr(created_at, 1, 10)", "2006-01-02"},
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
		key = "''"
	case store.SplitProject:
		key = "COALESCE(project_id, '')"
	case store.SplitModel:
		key = "model"
	case store.SplitToken:
		key = "COALESCE(token_id, '')"
	default:
		return nil, fmt.Errorf("usage series: unknown split %q", f.Split)
	}
	var w where
	if f.ProjectID != "" {
		w.add("project_id = ?", f.ProjectID)
	}
	if f.TokenID != "" {
		w.add("token_id = ?", f.TokenID)
	}
	if !f.From.IsZero() {
		w.add("created_at >= ?", timeArg(f.From))
	}
	if !f.To.IsZero() {
		w.add("created_at < ?", timeArg(f.To))
	}
	q := `SELECT ` + b.expr + `, ` + key + `, COUNT(*), COALESCE(SUM(prompt_tokens), 0),
		COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0) FROM usage` + w.String() +
		` GROUP BY 1, 2 ORDER BY 1, 2`
	rows, err := db.query(ctx, db.reader, q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	defer rows.Close()
	var out []store.UsagePoint
	for rows.Next() {
		var (
			p      store.UsagePoint
			bucket string
		)
		if err := rows.Scan(&bucket, &p.Key, &p.Requests, &p.PromptTokens, &p.CompletionTokens, &p.TotalTokens); err != nil {
			return nil, fmt.Errorf("usage series: %w", err)
		}
		if p.Bucket, err = time.Parse(b.layout, bucket); err != nil {
			return nil, fmt.Errorf("usage series: bucket: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	return out, nil
}

const consoleSessionCols = `id_hash, method, subject, token_mac, created_at, last_seen_at, expires_at`

// CreateConsoleSession inserts s.
func (db *DB) CreateConsoleSession(ctx context.Context, s *store.ConsoleSession) error {
	_, err := db.exec(ctx, db.writer, `INSERT INTO console_sessions (`+consoleSessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		s.IDHash, s.Method, s.Subject, s.TokenMAC, timeArg(s.CreatedAt), timeArg(s.LastSeenAt), timeArg(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create console session: %w", err)
	}
	return nil
}

// GetConsoleSession returns the session with idHash.
func (db *DB) GetConsoleSession(ctx context.Context, idHash string) (*store.ConsoleSession, error) {
	var s store.ConsoleSession
	err := db.queryRow(ctx, db.reader, `SELECT `+consoleSessionCols+` FROM console_sessions WHERE id_hash = ?`, []any{idHash},
		&s.IDHash, &s.Method, &s.Subject, &s.TokenMAC, timeCol{&s.CreatedAt}, timeCol{&s.LastSeenAt}, timeCol{&s.ExpiresAt})
	if err != nil {
		return nil, fmt.Errorf("load console session: %w", err)
	}
	return &s, nil
}

// TouchConsoleSession moves last_seen_at forward.
func (db *DB) TouchConsoleSession(ctx context.Context, idHash string, at time.Time) error {
	_, err := db.exec(ctx, db.writer, `UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?`,
		timeArg(at), idHash, timeArg(at))
	if err != nil {
		return fmt.Errorf("touch console session: %w", err)
	}
	return nil
}

// DeleteConsoleSession deletes the session with idHash.
func (db *DB) DeleteConsoleSession(ctx context.Context, idHash string) error {
	if _, err := db.exec(ctx, db.writer, `DELETE FROM console_sessions WHERE id_hash = ?`, idHash); err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}

// DeleteConsoleSessionsBefore deletes expired and idle sessions.
func (db *DB) DeleteConsoleSessionsBefore(ctx context.Context, expired, idle time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("delete console sessions: limit %d must be positive", limit)
	}
	res, err := db.exec(ctx, db.writer, `DELETE FROM console_sessions WHERE id_hash IN
		(SELECT id_hash FROM console_sessions WHERE expires_at < ? OR last_seen_at < ? LIMIT ?)`,
		timeArg(expired), timeArg(idle), limit)
	if err != nil {
		return 0, fmt.Errorf("delete console sessions: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete console sessions: %w", err)
	}
	return n, nil
}
