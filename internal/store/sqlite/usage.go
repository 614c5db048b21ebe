package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// rowsPerInsert is how many rows one multi-row INSERT carries: enough to
// spread database/sql's and the driver's per-statement cost (locking,
// argument conversion, a context watcher) over many rows, small enough that
// parsing the statement once per batch stays cheap.
const rowsPerInsert = 32

// insertBatches writes n rows in one transaction (insertRows).
func (db *DB) insertBatches(ctx context.Context, table string, cols []string, n int, args func(dst []any, i int) []any) error {
	if n == 0 {
		return nil
	}
	return db.inTx(ctx, func(tx *sql.Tx) error { return db.insertRows(ctx, tx, table, cols, n, args) })
}

// insertRows writes n rows in tx: full chunks of rowsPerInsert rows through
// one prepared multi-row INSERT, the rest through a prepared single-row
// one. args appends the values of row i, in cols order, to dst.
func (db *DB) insertRows(ctx context.Context, tx *sql.Tx, table string, cols []string, n int, args func(dst []any, i int) []any) error {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	head := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES "
	defer db.logSQL(ctx, head+row, time.Now())
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
			// A batch is milliseconds of CPU in this process (SQLite runs
			// here): give the requests waiting for a P their turn between
			// chunks, so a flush does not show up in their tail latency.
			runtime.Gosched()
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
}

var usageColumns = []string{"id", "created_at", "request_id", "project_id", "token_id", "agent_token_id", "user_id",
	"model", "endpoint", "status", "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "ttfb_ms",
	"streamed", "cached", "purpose"}

// addRollup adds one roll-up row to usage_rollup.
const addRollup = `INSERT INTO usage_rollup (granularity, bucket, project_id, token_id, agent_token_id, model, cached,
		purpose, requests, prompt_tokens, completion_tokens, total_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (granularity, bucket, project_id, token_id, agent_token_id, model, cached, purpose) DO UPDATE SET
		requests = requests + excluded.requests,
		prompt_tokens = prompt_tokens + excluded.prompt_tokens,
		completion_tokens = completion_tokens + excluded.completion_tokens,
		total_tokens = total_tokens + excluded.total_tokens`

// InsertUsage writes rows and adds them to usage_rollup in one transaction;
// a duplicate ID is store.ErrConflict and writes nothing.
func (db *DB) InsertUsage(ctx context.Context, rows []store.Usage) error {
	if len(rows) == 0 {
		return nil
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		err := db.insertRows(ctx, tx, "usage", usageColumns, len(rows), func(dst []any, i int) []any {
			u := &rows[i]
			// Integers as int64, a driver.Value: database/sql converts an int
			// through reflection, for each of the 32 rows of a statement.
			return append(dst, u.ID, timeArg(u.CreatedAt), u.RequestID, nullIDArg(u.ProjectID), nullIDArg(u.TokenID),
				nullIDArg(u.AgentTokenID), u.UserID, u.Model, u.Endpoint, int64(u.Status), int64(u.PromptTokens),
				int64(u.CompletionTokens), int64(u.TotalTokens), u.Latency.Milliseconds(), u.TTFB.Milliseconds(), u.Streamed,
				u.Cached, purpose(u.Purpose))
		})
		if err != nil {
			return err
		}
		defer db.logSQL(ctx, addRollup, time.Now())
		stmt, err := tx.PrepareContext(ctx, addRollup)
		if err != nil {
			return translate(err)
		}
		defer stmt.Close()
		for _, r := range store.RollUp(rows) {
			if _, err := stmt.ExecContext(ctx, r.Granularity, timeArg(r.Bucket), r.ProjectID, r.TokenID, r.AgentTokenID,
				r.Model, r.Cached, r.Purpose, r.Requests, r.PromptTokens, r.CompletionTokens, r.TotalTokens); err != nil {
				return translate(err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("insert usage: %w", err)
	}
	return nil
}

// usageKeys are the grouping expressions of each GroupBy over raw usage
// rows and over usage_rollup rows.
var usageKeys = map[string]struct{ raw, rollup string }{
	"":                   {"''", "''"},
	store.GroupByDay:     {"substr(created_at, 1, 10)", "substr(bucket, 1, 10)"},
	store.GroupByModel:   {"model", "model"},
	store.GroupByToken:   {"COALESCE(token_id, '')", "token_id"},
	store.GroupByCache:   {"CASE WHEN cached THEN 'hit' ELSE 'miss' END", "CASE WHEN cached THEN 'hit' ELSE 'miss' END"},
	store.GroupByPurpose: {"purpose", "purpose"},
}

// SumUsage aggregates the usage rows matching f, ordered by key. Without a
// GroupBy it returns exactly one total, zero when nothing matches. Whole
// days and hours of the range are read from usage_rollup, the ragged
// minutes at its ends from the usage rows (store.SplitUsageRange).
func (db *DB) SumUsage(ctx context.Context, f store.UsageFilter) ([]store.UsageTotal, error) {
	key, ok := usageKeys[f.GroupBy]
	if !ok {
		return nil, fmt.Errorf("sum usage: unknown group_by %q", f.GroupBy)
	}
	var (
		parts []string
		args  []any
	)
	for _, sp := range store.SplitUsageRange(f.From, f.To) {
		var w where
		if f.ProjectID != "" {
			w.add("project_id = ?", f.ProjectID)
		}
		if f.TokenID != "" {
			w.add("token_id = ?", f.TokenID)
		}
		col := "bucket"
		if sp.Source == store.SpanRaw {
			col = "created_at"
		} else {
			w.add("granularity = ?", sp.Source)
		}
		if !sp.From.IsZero() {
			w.add(col+" >= ?", timeArg(sp.From))
		}
		if !sp.To.IsZero() {
			w.add(col+" < ?", timeArg(sp.To))
		}
		if sp.Source == store.SpanRaw {
			parts = append(parts, `SELECT `+key.raw+` AS key, COUNT(*) AS requests, SUM(prompt_tokens) AS prompt,
				SUM(completion_tokens) AS completion, SUM(total_tokens) AS total FROM usage`+w.String()+` GROUP BY 1`)
		} else {
			parts = append(parts, `SELECT `+key.rollup+` AS key, SUM(requests) AS requests, SUM(prompt_tokens) AS prompt,
				SUM(completion_tokens) AS completion, SUM(total_tokens) AS total FROM usage_rollup`+w.String()+` GROUP BY 1`)
		}
		args = append(args, w.args...)
	}
	if len(parts) == 0 {
		if f.GroupBy == "" {
			return []store.UsageTotal{{}}, nil
		}
		return nil, nil
	}
	head, tail := "''", ""
	if f.GroupBy != "" {
		head, tail = "key", " GROUP BY key ORDER BY key"
	}
	q := `SELECT ` + head + `, COALESCE(SUM(requests), 0), COALESCE(SUM(prompt), 0), COALESCE(SUM(completion), 0),
		COALESCE(SUM(total), 0) FROM (` + strings.Join(parts, " UNION ALL ") + `)` + tail
	rows, err := db.query(ctx, db.reader, q, args...)
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
