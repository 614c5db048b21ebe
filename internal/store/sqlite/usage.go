package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// rowsPerInsert is how many rows one multi-row INSERT carries: enough to
// spread database/sql's and the driver's per-statement cost (locking,
// argument conversion, a context watcher) over many rows, small enough that
// parsing the statement once per batch stays cheap.
const rowsPerInsert = 32

// insertBatches writes n rows in one transaction: full chunks of
// rowsPerInsert rows through one prepared multi-row INSERT, the rest
// through a prepared single-row one. args appends the values of row i, in
// cols order, to dst.
func (db *DB) insertBatches(ctx context.Context, table string, cols []string, n int, args func(dst []any, i int) []any) error {
	if n == 0 {
		return nil
	}
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	head := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES "
	defer db.logSQL(ctx, head+row, time.Now())
	return db.inTx(ctx, func(tx *sql.Tx) error {
		vals := make([]any, 0, len(cols)*rowsPerInsert)
		i := 0
		if n >= rowsPerInsert {
			stmt, err := tx.PrepareContext(ctx, head+strings.TrimSuffix(strings.Repeat(row+", ", rowsPerInsert), ", "))
			if err != nil {
				return translate(err)
			}
			defer stmt.Close()
			for ; i+rowsPerInsert <= n; i += rowsPerInsert {
				vals = vals[:0]
				for j := i; j < i+rowsPerInsert; j++ {
					vals = args(vals, j)
				}
				if _, err := stmt.ExecContext(ctx, vals...); err != nil {
					return translate(err)
				}
			}
		}
		if i == n {
			return nil
		}
		stmt, err := tx.PrepareContext(ctx, head+row)
		if err != nil {
			return translate(err)
		}
		defer stmt.Close()
		for ; i < n; i++ {
			if _, err := stmt.ExecContext(ctx, args(vals[:0], i)...); err != nil {
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
		"streamed", "cached", "purpose"}
	err := db.insertBatches(ctx, "usage", cols, len(rows), func(dst []any, i int) []any {
		u := &rows[i]
		return append(dst, u.ID, timeArg(u.CreatedAt), u.RequestID, nullIDArg(u.ProjectID), nullIDArg(u.TokenID),
			nullIDArg(u.AgentTokenID), u.UserID, u.Model, u.Endpoint, u.Status, u.PromptTokens, u.CompletionTokens,
			u.TotalTokens, u.Latency.Milliseconds(), u.TTFB.Milliseconds(), u.Streamed, u.Cached, purpose(u.Purpose))
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
	case store.GroupByCache:
		return "CASE WHEN cached THEN 'hit' ELSE 'miss' END", true
	case store.GroupByPurpose:
		return "purpose", true
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

// purpose is the stored purpose of a usage row: PurposeClient unless set.
func purpose(p string) string {
	if p == "" {
		return store.PurposeClient
	}
	return p
}
