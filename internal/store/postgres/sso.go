package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const pendingColumns = `id, device_code_hash, user_code_hash, status, label, provider, subject, email,
	client_ip, last_polled_at, created_at, expires_at`

func scanPending(row pgx.Row) (*store.PendingAuthorization, error) {
	var p store.PendingAuthorization
	err := row.Scan(&p.ID, &p.DeviceCodeHash, &p.UserCodeHash, &p.Status, &p.Label, &p.Provider, &p.Subject, &p.Email,
		&p.ClientIP, &p.LastPolledAt, &p.CreatedAt, &p.ExpiresAt)
	if err != nil {
		return nil, err
	}
	p.LastPolledAt = utc(p.LastPolledAt)
	p.CreatedAt, p.ExpiresAt = p.CreatedAt.UTC(), p.ExpiresAt.UTC()
	return &p, nil
}

// CreatePendingAuthorization inserts p; a duplicate code hash is
// store.ErrConflict.
func (db *DB) CreatePendingAuthorization(ctx context.Context, p *store.PendingAuthorization) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `INSERT INTO pending_authorizations (`+pendingColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		p.ID, p.DeviceCodeHash, p.UserCodeHash, p.Status, p.Label, p.Provider, p.Subject, p.Email,
		p.ClientIP, p.LastPolledAt, p.CreatedAt, p.ExpiresAt)
	if err != nil {
		return fmt.Errorf("create pending authorization: %w", translate(err))
	}
	return nil
}

// GetPendingAuthorization loads an authorization by ID.
func (db *DB) GetPendingAuthorization(ctx context.Context, id string) (*store.PendingAuthorization, error) {
	if !isUUID(id) {
		return nil, fmt.Errorf("load pending authorization: %w", store.ErrNotFound)
	}
	return db.getPending(ctx, `id = $1`, id)
}

// GetPendingAuthorizationByUserCode loads an authorization by the hash of
// its user code.
func (db *DB) GetPendingAuthorizationByUserCode(ctx context.Context, hash string) (*store.PendingAuthorization, error) {
	return db.getPending(ctx, `user_code_hash = $1`, hash)
}

func (db *DB) getPending(ctx context.Context, cond string, arg any) (*store.PendingAuthorization, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	p, err := scanPending(c.QueryRow(ctx, `SELECT `+pendingColumns+` FROM pending_authorizations WHERE `+cond, arg))
	if err != nil {
		return nil, fmt.Errorf("load pending authorization: %w", translate(err))
	}
	return p, nil
}

// DecidePendingAuthorization approves or denies a pending authorization.
func (db *DB) DecidePendingAuthorization(ctx context.Context, id, status, provider, subject, email string, now time.Time) error {
	if !isUUID(id) {
		return fmt.Errorf("decide pending authorization: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `UPDATE pending_authorizations SET status = $2, provider = $3, subject = $4, email = $5
		WHERE id = $1 AND status = 'pending' AND expires_at > $6`, id, status, provider, subject, email, now)
	if err != nil {
		return fmt.Errorf("decide pending authorization: %w", translate(err))
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pending_authorizations WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("decide pending authorization: %w", translate(err))
	}
	if !exists {
		return fmt.Errorf("decide pending authorization: %w", store.ErrNotFound)
	}
	return fmt.Errorf("decide pending authorization: already decided or expired: %w", store.ErrConflict)
}

// PollDeviceCode answers one poll; see store.Store. The row is locked for
// the transaction, so concurrent polls of one device code are serialised
// and only one of them can redeem it.
func (db *DB) PollDeviceCode(ctx context.Context, hash string, now time.Time, interval time.Duration, tok *store.AgentToken) (string, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer c.Release()
	var outcome string
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		p, err := scanPending(tx.QueryRow(ctx, `SELECT `+pendingColumns+` FROM pending_authorizations
			WHERE device_code_hash = $1 FOR UPDATE`, hash))
		if err != nil {
			return translate(err)
		}
		outcome = store.PollOutcome(p, now, interval)
		if outcome != store.PollIssued {
			_, err := tx.Exec(ctx, `UPDATE pending_authorizations SET last_polled_at = $2,
				status = CASE WHEN $3 THEN 'expired' ELSE status END WHERE id = $1`,
				p.ID, now, outcome == store.PollExpired)
			return translate(err)
		}
		tok.Provider, tok.Subject, tok.Email, tok.Label = p.Provider, p.Subject, p.Email, p.Label
		if _, err := tx.Exec(ctx, `INSERT INTO agent_tokens (`+agentColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			tok.ID, tok.Hash, tok.Prefix, tok.Provider, tok.Subject, tok.Email, tok.Label, tok.IsActive,
			tok.CreatedAt, tok.LastAuthenticatedAt, tok.AuthExpiresAt); err != nil {
			return translate(err)
		}
		_, err = tx.Exec(ctx, `DELETE FROM pending_authorizations WHERE id = $1`, p.ID)
		return translate(err)
	})
	if err != nil {
		return "", fmt.Errorf("poll device code: %w", err)
	}
	return outcome, nil
}

// DeletePendingAuthorizationsExpiredBefore deletes the authorizations that
// expired earliest before t, at most limit of them.
func (db *DB) DeletePendingAuthorizationsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM pending_authorizations WHERE id IN
		(SELECT id FROM pending_authorizations WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete pending authorizations: %w", err)
	}
	return n, nil
}

const agentColumns = `id, token_hash, prefix, provider, subject, email, label, is_active,
	created_at, last_authenticated_at, auth_expires_at`

func scanAgent(row pgx.Row) (*store.AgentToken, error) {
	var a store.AgentToken
	err := row.Scan(&a.ID, &a.Hash, &a.Prefix, &a.Provider, &a.Subject, &a.Email, &a.Label, &a.IsActive,
		&a.CreatedAt, &a.LastAuthenticatedAt, &a.AuthExpiresAt)
	if err != nil {
		return nil, err
	}
	a.CreatedAt, a.AuthExpiresAt = a.CreatedAt.UTC(), a.AuthExpiresAt.UTC()
	a.LastAuthenticatedAt = utc(a.LastAuthenticatedAt)
	return &a, nil
}

// GetAgentToken loads an agent token by ID.
func (db *DB) GetAgentToken(ctx context.Context, id string) (*store.AgentToken, error) {
	if !isUUID(id) {
		return nil, fmt.Errorf("load agent token: %w", store.ErrNotFound)
	}
	return db.getAgent(ctx, `id = $1`, id)
}

// GetAgentTokenByHash loads an agent token by the hex SHA-256 of its
// secret.
func (db *DB) GetAgentTokenByHash(ctx context.Context, hash string) (*store.AgentToken, error) {
	return db.getAgent(ctx, `token_hash = $1`, hash)
}

func (db *DB) getAgent(ctx context.Context, cond string, arg any) (*store.AgentToken, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	a, err := scanAgent(c.QueryRow(ctx, `SELECT `+agentColumns+` FROM agent_tokens WHERE `+cond, arg))
	if err != nil {
		return nil, fmt.Errorf("load agent token: %w", translate(err))
	}
	return a, nil
}

// ListAgentTokens returns a page of agent tokens, newest first, and the
// number of matching ones.
func (db *DB) ListAgentTokens(ctx context.Context, f store.AgentTokenFilter) ([]*store.AgentToken, int, error) {
	var q query
	if f.Email != "" {
		q.where(`lower(email) = lower(?)`, f.Email)
	}
	if f.Provider != "" || f.Subject != "" {
		q.where(`provider = ?`, f.Provider)
		q.where(`subject = ?`, f.Subject)
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
	if err := c.QueryRow(ctx, `SELECT count(*) FROM agent_tokens`+q.clause(), q.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count agent tokens: %w", translate(err))
	}
	limit, args := q.page(f.Page)
	rows, err := c.Query(ctx, `SELECT `+agentColumns+` FROM agent_tokens`+q.clause()+
		` ORDER BY created_at DESC, id`+limit, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list agent tokens: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.AgentToken, error) { return scanAgent(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list agent tokens: %w", translate(err))
	}
	return out, total, nil
}

// RevokeAgentToken deactivates an agent token.
func (db *DB) RevokeAgentToken(ctx context.Context, id string) error {
	if !isUUID(id) {
		return fmt.Errorf("revoke agent token: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `UPDATE agent_tokens SET is_active = false WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("revoke agent token: %w", translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("revoke agent token: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteAgentTokensExpiredBefore deletes the agent tokens that expired
// earliest before t, at most limit of them.
func (db *DB) DeleteAgentTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM agent_tokens WHERE id IN
		(SELECT id FROM agent_tokens WHERE auth_expires_at < $1 ORDER BY auth_expires_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete agent tokens: %w", err)
	}
	return n, nil
}

const sessionColumns = `id, secret_hash, oidc_state, oidc_nonce, pkce_verifier, pending_id, return_to, provider, subject,
	email, created_at, expires_at`

// CreateSSOSession inserts s.
func (db *DB) CreateSSOSession(ctx context.Context, s *store.SSOSession) error {
	pending, err := optionalUUID(s.PendingID)
	if err != nil {
		return fmt.Errorf("create sso session: %w", store.ErrConflict)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `INSERT INTO sso_sessions (`+sessionColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		s.ID, s.SecretHash, s.State, s.Nonce, s.Verifier, pending, s.ReturnTo, s.Provider, s.Subject, s.Email, s.CreatedAt, s.ExpiresAt)
	if err != nil {
		return fmt.Errorf("create sso session: %w", translate(err))
	}
	return nil
}

// GetSSOSessionByHash loads a session by the hash of its cookie secret.
func (db *DB) GetSSOSessionByHash(ctx context.Context, hash string) (*store.SSOSession, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	var (
		s       store.SSOSession
		pending *string
	)
	err = c.QueryRow(ctx, `SELECT id, secret_hash, oidc_state, oidc_nonce, pkce_verifier, pending_id::text, return_to,
		provider, subject, email, created_at, expires_at FROM sso_sessions WHERE secret_hash = $1`, hash).Scan(
		&s.ID, &s.SecretHash, &s.State, &s.Nonce, &s.Verifier, &pending, &s.ReturnTo, &s.Provider, &s.Subject, &s.Email,
		&s.CreatedAt, &s.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("load sso session: %w", translate(err))
	}
	if pending != nil {
		s.PendingID = *pending
	}
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	return &s, nil
}

// CompleteSSOSession records the identity of a session whose login is in
// flight.
func (db *DB) CompleteSSOSession(ctx context.Context, id, provider, subject, email string) error {
	if !isUUID(id) {
		return fmt.Errorf("complete sso session: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	var state string
	err = c.QueryRow(ctx, `WITH old AS (SELECT id, oidc_state FROM sso_sessions WHERE id = $1 FOR UPDATE)
		UPDATE sso_sessions s SET provider = $2, subject = $3, email = $4,
			oidc_state = '', oidc_nonce = '', pkce_verifier = ''
		FROM old WHERE s.id = old.id AND old.oidc_state <> '' RETURNING old.oidc_state`,
		id, provider, subject, email).Scan(&state)
	if err == nil {
		return nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("complete sso session: %w", translate(err))
	}
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sso_sessions WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("complete sso session: %w", translate(err))
	}
	if !exists {
		return fmt.Errorf("complete sso session: %w", store.ErrNotFound)
	}
	return fmt.Errorf("complete sso session: login already completed: %w", store.ErrConflict)
}

// DeleteSSOSession deletes a session.
func (db *DB) DeleteSSOSession(ctx context.Context, id string) error {
	if !isUUID(id) {
		return nil
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `DELETE FROM sso_sessions WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete sso session: %w", translate(err))
	}
	return nil
}

// DeleteSSOSessionsExpiredBefore deletes the sessions that expired
// earliest before t, at most limit of them.
func (db *DB) DeleteSSOSessionsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM sso_sessions WHERE id IN
		(SELECT id FROM sso_sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete sso sessions: %w", err)
	}
	return n, nil
}

// CountAuthFailure counts one failed attempt of identifier.
func (db *DB) CountAuthFailure(ctx context.Context, identifier string, now, resetBefore time.Time) (int, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	var n int
	err = c.QueryRow(ctx, `INSERT INTO auth_rate_limits AS t (identifier, failed_attempts, last_attempt_at)
		VALUES ($1, 1, $2)
		ON CONFLICT (identifier) DO UPDATE SET
			failed_attempts = CASE WHEN t.last_attempt_at < $3 THEN 1 ELSE t.failed_attempts + 1 END,
			last_attempt_at = greatest(t.last_attempt_at, excluded.last_attempt_at)
		RETURNING failed_attempts`, identifier, now, resetBefore).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count auth failure: %w", translate(err))
	}
	return n, nil
}

// GetAuthBlock returns the row of identifier.
func (db *DB) GetAuthBlock(ctx context.Context, identifier string) (*store.AuthBlock, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	var (
		b     store.AuthBlock
		until *time.Time
	)
	err = c.QueryRow(ctx, `SELECT identifier, failed_attempts, last_attempt_at, blocked_until
		FROM auth_rate_limits WHERE identifier = $1`, identifier).Scan(&b.Identifier, &b.FailedAttempts, &b.LastAttemptAt, &until)
	if err != nil {
		return nil, fmt.Errorf("load auth block: %w", translate(err))
	}
	b.LastAttemptAt = b.LastAttemptAt.UTC()
	if until != nil {
		b.BlockedUntil = until.UTC()
	}
	return &b, nil
}
