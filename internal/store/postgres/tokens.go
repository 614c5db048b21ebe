package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const tokenColumns = `id, project_id, token_hash, prefix, label, expires_at, max_requests, request_count,
	is_active, deactivated_at, rpm_limit, tpm_limit, allowed_models, created_at, last_used_at`

// tokenDest lists the scan destinations of tokenColumns.
func tokenDest(t *store.Token) []any {
	return []any{&t.ID, &t.ProjectID, &t.Hash, &t.Prefix, &t.Label, &t.ExpiresAt, &t.MaxRequests, &t.RequestCount,
		&t.IsActive, &t.DeactivatedAt, &t.RPMLimit, &t.TPMLimit, store.ListScanner(&t.AllowedModels), &t.CreatedAt, &t.LastUsedAt}
}

// tokenUTC puts the times of a scanned token in UTC.
func tokenUTC(t *store.Token) {
	t.ExpiresAt = t.ExpiresAt.UTC()
	t.DeactivatedAt = utc(t.DeactivatedAt)
	t.CreatedAt = t.CreatedAt.UTC()
	t.LastUsedAt = utc(t.LastUsedAt)
}

func scanToken(row pgx.Row) (*store.Token, error) {
	var t store.Token
	if err := row.Scan(tokenDest(&t)...); err != nil {
		return nil, err
	}
	tokenUTC(&t)
	return &t, nil
}

// CreateToken inserts t; an unknown project or a duplicate hash is
// store.ErrConflict.
func (db *DB) CreateToken(ctx context.Context, t *store.Token) error {
	if !isUUID(t.ProjectID) {
		return fmt.Errorf("create token: unknown project: %w", store.ErrConflict)
	}
	models, err := store.ListValue(t.AllowedModels)
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `INSERT INTO tokens (`+tokenColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		t.ID, t.ProjectID, t.Hash, t.Prefix, t.Label, t.ExpiresAt, t.MaxRequests, t.RequestCount,
		t.IsActive, t.DeactivatedAt, t.RPMLimit, t.TPMLimit, models, t.CreatedAt, t.LastUsedAt)
	if err != nil {
		return fmt.Errorf("create token: %w", translate(err))
	}
	return nil
}

// GetToken loads a token by ID; store.ErrNotFound when there is none.
func (db *DB) GetToken(ctx context.Context, id string) (*store.Token, error) {
	if !isUUID(id) {
		return nil, fmt.Errorf("load token: %w", store.ErrNotFound)
	}
	return db.getToken(ctx, `id = $1`, id)
}

// tokenWithProject selects a token by hash joined to its project, the
// columns of tokenColumns then projectColumns.
var tokenWithProject = `SELECT ` + qualify("t", tokenColumns) + `, ` + qualify("p", projectColumns) + `
	FROM tokens t JOIN projects p ON p.id = t.project_id WHERE t.token_hash = $1`

// GetTokenAndProjectByHash loads the token whose secret has the hex SHA-256
// hash, and its project, in one query; store.ErrNotFound when there is no
// such token.
func (db *DB) GetTokenAndProjectByHash(ctx context.Context, hash string) (*store.Token, *store.Project, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer c.Release()
	var (
		t store.Token
		p store.Project
	)
	if err := c.QueryRow(ctx, tokenWithProject, hash).Scan(append(tokenDest(&t), projectDest(&p)...)...); err != nil {
		return nil, nil, fmt.Errorf("load token and project: %w", translate(err))
	}
	tokenUTC(&t)
	projectUTC(&p)
	return &t, &p, nil
}

func (db *DB) getToken(ctx context.Context, cond string, arg any) (*store.Token, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	t, err := scanToken(c.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE `+cond, arg))
	if err != nil {
		return nil, fmt.Errorf("load token: %w", translate(err))
	}
	return t, nil
}

// ListTokens returns a page of tokens, oldest first, and the number of
// matching tokens.
func (db *DB) ListTokens(ctx context.Context, f store.TokenFilter) ([]*store.Token, int, error) {
	var q query
	if f.ProjectID != "" {
		if !isUUID(f.ProjectID) {
			return nil, 0, nil
		}
		q.where(`project_id = ?`, f.ProjectID)
	}
	if f.Active != nil {
		q.where(`is_active = ?`, *f.Active)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer c.Release()
	var total int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM tokens`+q.clause(), q.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count tokens: %w", translate(err))
	}
	limit, args := q.page(f.Page)
	rows, err := c.Query(ctx, `SELECT `+tokenColumns+` FROM tokens`+q.clause()+
		` ORDER BY created_at, id`+limit, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list tokens: %w", translate(err))
	}
	tokens, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Token, error) { return scanToken(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list tokens: %w", translate(err))
	}
	return tokens, total, nil
}

// UpdateToken writes label, is_active, deactivated_at, max_requests, the
// limits and the allowed models of t; store.ErrNotFound when the token does not exist.
func (db *DB) UpdateToken(ctx context.Context, t *store.Token) error {
	if !isUUID(t.ID) {
		return fmt.Errorf("update token: %w", store.ErrNotFound)
	}
	models, err := store.ListValue(t.AllowedModels)
	if err != nil {
		return fmt.Errorf("update token: %w", err)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `UPDATE tokens SET label = $2, is_active = is_active AND $3, deactivated_at = COALESCE(deactivated_at, $4),
		max_requests = $5, rpm_limit = $6, tpm_limit = $7, allowed_models = $8
		WHERE id = $1`,
		t.ID, t.Label, t.IsActive, t.DeactivatedAt, t.MaxRequests, t.RPMLimit, t.TPMLimit, models)
	if err != nil {
		return fmt.Errorf("update token: %w", translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update token: %w", store.ErrNotFound)
	}
	return nil
}

// DeactivateProjectTokens deactivates every active token of a project at
// the given time and returns how many changed.
func (db *DB) DeactivateProjectTokens(ctx context.Context, projectID string, at time.Time) (int64, error) {
	if !isUUID(projectID) {
		return 0, nil
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `UPDATE tokens SET is_active = false, deactivated_at = $2
		WHERE project_id = $1 AND is_active`, projectID, at)
	if err != nil {
		return 0, fmt.Errorf("deactivate project tokens: %w", translate(err))
	}
	return tag.RowsAffected(), nil
}

// ConsumeToken counts one request against the token's quota with a single
// conditional update and returns the new request_count.
// store.ErrQuotaExceeded when the quota is used up, store.ErrNotFound when
// the token does not exist.
func (db *DB) ConsumeToken(ctx context.Context, tokenID string, at time.Time) (int64, error) {
	if !isUUID(tokenID) {
		return 0, fmt.Errorf("consume token: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	var count int64
	err = c.QueryRow(ctx, `UPDATE tokens SET request_count = request_count + 1, last_used_at = $2
		WHERE id = $1 AND (max_requests IS NULL OR request_count < max_requests)
		RETURNING request_count`, tokenID, at).Scan(&count)
	if err == nil {
		return count, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("consume token: %w", translate(err))
	}
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tokens WHERE id = $1)`, tokenID).Scan(&exists); err != nil {
		return 0, fmt.Errorf("consume token: %w", translate(err))
	}
	if exists {
		return 0, fmt.Errorf("consume token: %w", store.ErrQuotaExceeded)
	}
	return 0, fmt.Errorf("consume token: %w", store.ErrNotFound)
}

// ReserveRequests adds up to n requests to the token's request_count, no
// more than its max_requests leaves, and returns how many it added and the
// new count; store.ErrNotFound when the token does not exist. The row is
// locked (FOR UPDATE) between the read and the write, so concurrent
// reservations queue and never grant more than max_requests together.
func (db *DB) ReserveRequests(ctx context.Context, tokenID string, n int64) (granted, count int64, err error) {
	if n < 0 {
		return 0, 0, fmt.Errorf("reserve requests: negative n %d", n)
	}
	if !isUUID(tokenID) {
		return 0, 0, fmt.Errorf("reserve requests: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer c.Release()
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		var limit *int64
		if err := tx.QueryRow(ctx, `SELECT request_count, max_requests FROM tokens WHERE id = $1 FOR UPDATE`,
			tokenID).Scan(&count, &limit); err != nil {
			return err
		}
		granted = n
		if limit != nil {
			granted = min(n, max(*limit-count, 0))
		}
		if granted == 0 {
			return nil
		}
		count += granted
		_, err := tx.Exec(ctx, `UPDATE tokens SET request_count = $2 WHERE id = $1`, tokenID, count)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reserve requests: %w", translate(err))
	}
	return granted, count, nil
}

// TouchTokens adds request counts and moves last_used_at forward (a zero
// LastUsedAt leaves it alone) in one statement. Touches of one token are merged; rows are locked in ID order so
// concurrent batches cannot deadlock. IDs that are not UUIDs match no token
// and are skipped, as are unknown tokens.
func (db *DB) TouchTokens(ctx context.Context, touches []store.TokenTouch) error {
	merged := make(map[uuid.UUID]store.TokenTouch, len(touches))
	for _, t := range touches {
		id, err := uuid.Parse(t.TokenID)
		if err != nil {
			continue
		}
		m, ok := merged[id]
		if !ok {
			merged[id] = t
			continue
		}
		m.Requests += t.Requests
		if t.LastUsedAt.After(m.LastUsedAt) {
			m.LastUsedAt = t.LastUsedAt
		}
		merged[id] = m
	}
	if len(merged) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(merged))
	for id := range merged {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	requests := make([]int64, len(ids))
	used := make([]*time.Time, len(ids))
	for i, id := range ids {
		t := merged[id]
		requests[i] = t.Requests
		if !t.LastUsedAt.IsZero() {
			used[i] = &t.LastUsedAt
		}
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `WITH v AS (
			SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS v (id, requests, used_at)
		), locked AS (
			SELECT t.id FROM tokens t WHERE t.id = ANY ($1::uuid[]) ORDER BY t.id FOR UPDATE
		)
		UPDATE tokens t
		SET request_count = t.request_count + v.requests,
			last_used_at = GREATEST(t.last_used_at, v.used_at)
		FROM v JOIN locked l ON l.id = v.id
		WHERE t.id = v.id`, ids, requests, used)
	if err != nil {
		return fmt.Errorf("touch tokens: %w", translate(err))
	}
	return nil
}
