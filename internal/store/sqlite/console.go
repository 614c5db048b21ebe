package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// UsageSeries sums usage_rollup rows by bucket and split key.
func (db *DB) UsageSeries(ctx context.Context, f store.UsageSeriesFilter) ([]store.UsagePoint, error) {
	if err := f.Check(); err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	key := map[string]string{"": "''", store.SplitProject: "project_id", store.SplitModel: "model", store.SplitToken: "token_id"}[f.Split]
	var w where
	w.add("granularity = ?", f.Bucket)
	w.add("bucket >= ?", timeArg(f.From))
	w.add("bucket < ?", timeArg(f.To))
	if f.ProjectID != "" {
		w.add("project_id = ?", f.ProjectID)
	}
	if f.TokenID != "" {
		w.add("token_id = ?", f.TokenID)
	}
	q := `SELECT bucket, ` + key + `, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(total_tokens)
		FROM usage_rollup` + w.String() + ` GROUP BY 1, 2 ORDER BY 1, 2`
	rows, err := db.query(ctx, db.reader, q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	defer rows.Close()
	var out []store.UsagePoint
	for rows.Next() {
		var p store.UsagePoint
		if err := rows.Scan(timeCol{&p.Bucket}, &p.Key, &p.Requests, &p.PromptTokens, &p.CompletionTokens, &p.TotalTokens); err != nil {
			return nil, fmt.Errorf("usage series: %w", err)
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
