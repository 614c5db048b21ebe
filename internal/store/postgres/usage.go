package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

var usageColumns = []string{"id", "created_at", "request_id", "project_id", "token_id", "agent_token_id",
	"user_id", "model", "endpoint", "status", "prompt_tokens", "completion_tokens", "total_tokens",
	"latency_ms", "ttfb_ms", "streamed", "cached", "purpose"}

// InsertUsage writes a batch of usage rows with one COPY. Rows without an ID
// get a new one; empty optional IDs are stored as NULL.
func (db *DB) InsertUsage(ctx context.Context, rows []store.Usage) error {
	if len(rows) == 0 {
		return nil
	}
	values := make([][]any, len(rows))
	for i, u := range rows {
		id := u.ID
		if id == "" {
			id = uuid.NewString()
		}
		var ids [4]any
		for j, s := range []string{id, u.ProjectID, u.TokenID, u.AgentTokenID} {
			v, err := optionalUUID(s)
			if err != nil {
				return fmt.Errorf("insert usage: %w", err)
			}
			ids[j] = v
		}
		values[i] = []any{ids[0], u.CreatedAt, u.RequestID, ids[1], ids[2], ids[3],
			u.UserID, u.Model, u.Endpoint, u.Status, u.PromptTokens, u.CompletionTokens, u.TotalTokens,
			u.Latency.Milliseconds(), u.TTFB.Milliseconds(), u.Streamed, u.Cached, purpose(u.Purpose)}
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"usage"}, usageColumns, pgx.CopyFromRows(values)); err != nil {
		return fmt.Errorf("insert usage: %w", translate(err))
	}
	return nil
}

// purpose is the stored purpose of a usage row: PurposeClient unless set.
func purpose(p string) string {
	if p == "" {
		return store.PurposeClient
	}
	return p
}

// SumUsage aggregates usage rows, ordered by key. Without GroupBy it returns
// one total (zero when nothing matches); grouped by day, keys are UTC days.
func (db *DB) SumUsage(ctx context.Context, f store.UsageFilter) ([]store.UsageTotal, error) {
	var key string
	switch f.GroupBy {
	case "":
		key = `''`
	case store.GroupByDay:
		key = `to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`
	case store.GroupByModel:
		key = `model`
	case store.GroupByToken:
		key = `coalesce(token_id::text, '')`
	case store.GroupByCache:
		key = `CASE WHEN cached THEN 'hit' ELSE 'miss' END`
	case store.GroupByPurpose:
		key = `purpose`
	default:
		return nil, fmt.Errorf("sum usage: unknown grouping %q", f.GroupBy)
	}
	var q query
	for _, idf := range []struct{ col, id string }{{"project_id", f.ProjectID}, {"token_id", f.TokenID}} {
		if idf.id == "" {
			continue
		}
		if !isUUID(idf.id) {
			if f.GroupBy == "" {
				return []store.UsageTotal{{}}, nil
			}
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
	stmt := `SELECT ` + key + ` AS key, count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0)
		FROM usage` + q.clause()
	if f.GroupBy != "" {
		stmt += ` GROUP BY 1 ORDER BY 1`
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, stmt, q.args...)
	if err != nil {
		return nil, fmt.Errorf("sum usage: %w", translate(err))
	}
	totals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.UsageTotal, error) {
		var t store.UsageTotal
		err := r.Scan(&t.Key, &t.Requests, &t.PromptTokens, &t.CompletionTokens, &t.TotalTokens)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("sum usage: %w", translate(err))
	}
	return totals, nil
}
