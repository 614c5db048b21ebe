package postgres

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/llmproxy/llm-proxy/internal/store"
)

var usageColumns = []string{"id", "created_at", "request_id", "project_id", "token_id", "agent_token_id",
	"user_id", "model", "endpoint", "status", "prompt_tokens", "completion_tokens", "total_tokens",
	"latency_ms", "ttfb_ms", "streamed", "cached", "purpose"}

// InsertUsage writes a batch of usage rows with one COPY and adds them to
// usage_rollup, in one transaction: a batch that fails (a duplicate ID is
// store.ErrConflict) leaves neither. Rows without an ID get a new one;
// empty optional IDs are stored as NULL.
func (db *DB) InsertUsage(ctx context.Context, rows []store.Usage) error {
	if len(rows) == 0 {
		return nil
	}
	values := make([][]any, len(rows))
	// The roll-up keys IDs as text, in the form the uuid columns give back
	// (lower case), so that it groups and filters like the raw rows.
	canonical := slices.Clone(rows)
	for i, u := range rows {
		id := u.ID
		if id == "" {
			id = uuid.NewString()
		}
		var ids [4]pgtype.UUID
		for j, s := range []string{id, u.ProjectID, u.TokenID, u.AgentTokenID} {
			v, err := optionalUUID(s)
			if err != nil {
				return fmt.Errorf("insert usage: %w", err)
			}
			ids[j] = v
		}
		c := &canonical[i]
		c.ProjectID, c.TokenID, c.AgentTokenID = uuidText(ids[1]), uuidText(ids[2]), uuidText(ids[3])
		values[i] = []any{ids[0], u.CreatedAt, u.RequestID, ids[1], ids[2], ids[3],
			u.UserID, u.Model, u.Endpoint, u.Status, u.PromptTokens, u.CompletionTokens, u.TotalTokens,
			u.Latency.Milliseconds(), u.TTFB.Milliseconds(), u.Streamed, u.Cached, purpose(u.Purpose)}
	}
	rollup := rollupArrays(store.RollUp(canonical))
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"usage"}, usageColumns, pgx.CopyFromRows(values)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, addRollup, rollup...)
		return err
	})
	if err != nil {
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

// uuidText is the text form of an optional UUID, "" for NULL.
func uuidText(u pgtype.UUID) string {
	if !u.Valid {
		return ""
	}
	return uuid.UUID(u.Bytes).String()
}

// canonicalUUID returns s in the lower-case form PostgreSQL prints UUIDs
// in, or s itself when it is not a UUID.
func canonicalUUID(s string) string {
	if u, err := uuid.Parse(s); err == nil {
		return u.String()
	}
	return s
}

// addRollup adds roll-up rows given as parallel arrays, in their order
// (sorted by key, so concurrent batches lock rows in one order).
const addRollup = `INSERT INTO usage_rollup AS r (granularity, bucket, project_id, token_id, agent_token_id, model,
		cached, purpose, requests, prompt_tokens, completion_tokens, total_tokens)
	SELECT g, b, p, t, a, m, c, pu, rq, pt, ct, tt FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
		$5::text[], $6::text[], $7::boolean[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
		WITH ORDINALITY AS u (g, b, p, t, a, m, c, pu, rq, pt, ct, tt, n)
	ORDER BY n
	ON CONFLICT (granularity, bucket, project_id, token_id, agent_token_id, model, cached, purpose) DO UPDATE SET
		requests = r.requests + excluded.requests,
		prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
		completion_tokens = r.completion_tokens + excluded.completion_tokens,
		total_tokens = r.total_tokens + excluded.total_tokens`

// rollupArrays turns roll-up rows into the arguments of addRollup.
func rollupArrays(rows []store.UsageRollup) []any {
	var (
		granularity, project, token, agent, model, purpose []string
		bucket                                             []time.Time
		cached                                             []bool
		requests, prompt, completion, total                []int64
	)
	for _, r := range rows {
		granularity = append(granularity, r.Granularity)
		bucket = append(bucket, r.Bucket)
		project = append(project, r.ProjectID)
		token = append(token, r.TokenID)
		agent = append(agent, r.AgentTokenID)
		model = append(model, r.Model)
		cached = append(cached, r.Cached)
		purpose = append(purpose, r.Purpose)
		requests = append(requests, r.Requests)
		prompt = append(prompt, r.PromptTokens)
		completion = append(completion, r.CompletionTokens)
		total = append(total, r.TotalTokens)
	}
	return []any{granularity, bucket, project, token, agent, model, cached, purpose, requests, prompt, completion, total}
}

// usageKeys are the grouping expressions of each GroupBy over raw usage
// rows and over usage_rollup rows.
var usageKeys = map[string]struct{ raw, rollup string }{
	"":                   {`''`, `''`},
	store.GroupByDay:     {`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`, `to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD')`},
	store.GroupByModel:   {`model`, `model`},
	store.GroupByToken:   {`coalesce(token_id::text, '')`, `token_id`},
	store.GroupByCache:   {`CASE WHEN cached THEN 'hit' ELSE 'miss' END`, `CASE WHEN cached THEN 'hit' ELSE 'miss' END`},
	store.GroupByPurpose: {`purpose`, `purpose`},
}

// SumUsage aggregates usage, ordered by key. Without GroupBy it returns one
// total (zero when nothing matches); grouped by day, keys are UTC days.
// Whole days and hours of the range are read from usage_rollup, the ragged
// minutes at its ends from the usage rows (store.SplitUsageRange), so the
// answer is the raw rows' exactly.
func (db *DB) SumUsage(ctx context.Context, f store.UsageFilter) ([]store.UsageTotal, error) {
	key, ok := usageKeys[f.GroupBy]
	if !ok {
		return nil, fmt.Errorf("sum usage: unknown grouping %q", f.GroupBy)
	}
	none := []store.UsageTotal(nil)
	if f.GroupBy == "" {
		none = []store.UsageTotal{{}}
	}
	for _, id := range []string{f.ProjectID, f.TokenID} {
		if id != "" && !isUUID(id) {
			return none, nil
		}
	}
	// Compare IDs in canonical form: the roll-up holds them as text.
	f.ProjectID, f.TokenID = canonicalUUID(f.ProjectID), canonicalUUID(f.TokenID)
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var parts []string
	for _, sp := range store.SplitUsageRange(f.From, f.To) {
		var conds []string
		if f.ProjectID != "" {
			conds = append(conds, `project_id = `+arg(f.ProjectID))
		}
		if f.TokenID != "" {
			conds = append(conds, `token_id = `+arg(f.TokenID))
		}
		col := `bucket`
		if sp.Source == store.SpanRaw {
			col = `created_at`
		} else {
			conds = append(conds, `granularity = `+arg(sp.Source))
		}
		if !sp.From.IsZero() {
			conds = append(conds, col+` >= `+arg(sp.From))
		}
		if !sp.To.IsZero() {
			conds = append(conds, col+` < `+arg(sp.To))
		}
		where := ""
		if len(conds) > 0 {
			where = ` WHERE ` + strings.Join(conds, ` AND `)
		}
		if sp.Source == store.SpanRaw {
			parts = append(parts, `SELECT `+key.raw+` AS key, count(*) AS requests, sum(prompt_tokens) AS prompt,
				sum(completion_tokens) AS completion, sum(total_tokens) AS total FROM usage`+where+` GROUP BY 1`)
		} else {
			parts = append(parts, `SELECT `+key.rollup+` AS key, sum(requests) AS requests, sum(prompt_tokens) AS prompt,
				sum(completion_tokens) AS completion, sum(total_tokens) AS total FROM usage_rollup`+where+` GROUP BY 1`)
		}
	}
	if len(parts) == 0 {
		return none, nil
	}
	head, tail := `''`, ``
	if f.GroupBy != "" {
		head, tail = `key`, ` GROUP BY key ORDER BY key`
	}
	stmt := `SELECT ` + head + `, coalesce(sum(requests), 0)::bigint, coalesce(sum(prompt), 0)::bigint,
		coalesce(sum(completion), 0)::bigint, coalesce(sum(total), 0)::bigint
		FROM (` + strings.Join(parts, ` UNION ALL `) + `) AS s` + tail
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, stmt, args...)
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

// subtractRollup takes roll-up sums, given as the arguments of addRollup,
// out of usage_rollup: rows left counting no request are deleted, the
// others updated. (The two touch disjoint rows, as one statement must.)
const subtractRollup = `WITH u AS (
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::boolean[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
			AS u (g, b, p, t, a, m, c, pu, rq, pt, ct, tt)
	), emptied AS (
		DELETE FROM usage_rollup r USING u
		WHERE (r.granularity, r.bucket, r.project_id, r.token_id, r.agent_token_id, r.model, r.cached, r.purpose)
			= (u.g, u.b, u.p, u.t, u.a, u.m, u.c, u.pu) AND r.requests <= u.rq
	)
	UPDATE usage_rollup r SET requests = r.requests - u.rq, prompt_tokens = r.prompt_tokens - u.pt,
		completion_tokens = r.completion_tokens - u.ct, total_tokens = r.total_tokens - u.tt
	FROM u WHERE (r.granularity, r.bucket, r.project_id, r.token_id, r.agent_token_id, r.model, r.cached, r.purpose)
		= (u.g, u.b, u.p, u.t, u.a, u.m, u.c, u.pu) AND r.requests > u.rq`
