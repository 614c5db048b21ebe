package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// insertBatches writes n rows in one transaction with one prepared
// single-row INSERT: SQLite parses it once and then only binds and steps,
// which costs less CPU than parsing a large multi-row statement (there is no
// network round trip to save in process).
func (db *DB) insertBatches(ctx context.Context, table string, cols []string, n int, args func(i int) []any) error {
	if n == 0 {
		return nil
	}
	q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	defer db.logSQL(ctx, q, time.Now())
	return db.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return translate(err)
		}
		defer stmt.Close()
		for i := range n {
			if _, err := stmt.ExecContext(ctx, args(i)...); err != nil {
				return translate(err)
			}
		}
		return nil
	})
}

// InsertUsage writes rows in one transaction; a duplicate ID is
// store.ErrConflict and writes nothing.
func (db *DB) InsertUsage(ctx context.Context, rows []store.Usage) error {
	cols := []string{"id", "created_at", "request_id", "project_id", "token_id", "agent_token_id", "user_id",
		"model", "endpoint", "status", "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "ttfb_ms",
		"streamed"}
	err := db.insertBatches(ctx, "usage", cols, len(rows), func(i int) []any {
		u := &rows[i]
		return []any{u.ID, timeArg(u.CreatedAt), u.RequestID, nullIDArg(u.ProjectID), nullIDArg(u.TokenID),
			nullIDArg(u.AgentTokenID), u.UserID, u.Model, u.Endpoint, u.Status, u.PromptTokens, u.CompletionTokens,
			u.TotalTokens, u.Latency.Milliseconds(), u.TTFB.Milliseconds(), u.Streamed}
	})
	if err != nil {
		return fmt.Errorf("insert usage: %w", err)
	}
	return nil
}

// usageKey returns the SQL key expression of a GroupBy.
func usageKey(groupBy string) (string, bool) {
	switch groupBy {
	case "":
		return "''", true
	case store.GroupByDay:
		return "substr(created_at, 1, 10)", true
	case store.GroupByModel:
		return "model", true
	case store.GroupByToken:
		return "COALESCE(token_id, '')", true
	}
	return "", false
}

// SumUsage aggregates the usage rows matching f, ordered by key. Without a
// GroupBy it returns exactly one total, zero when nothing matches.
func (db *DB) SumUsage(ctx context.Context, f store.UsageFilter) ([]store.UsageTotal, error) {
	key, ok := usageKey(f.GroupBy)
	if !ok {
		return nil, fmt.Errorf("sum usage: unknown group_by %q", f.GroupBy)
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
	q := `SELECT ` + key + `, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
		COALESCE(SUM(total_tokens), 0) FROM usage` + w.String()
	if f.GroupBy != "" {
		q += " GROUP BY 1 ORDER BY 1"
	}
	rows, err := db.query(ctx, db.reader, q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("sum usage: %w", err)
	}
	defer rows.Close()
	var out []store.UsageTotal
	for rows.Next() {
		var u store.UsageTotal
		if err := rows.Scan(&u.Key, &u.Requests, &u.PromptTokens, &u.CompletionTokens, &u.TotalTokens); err != nil {
			return nil, fmt.Errorf("sum usage: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sum usage: %w", err)
	}
	return out, nil
}
