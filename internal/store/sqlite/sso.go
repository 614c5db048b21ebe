package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const pendingCols = `id, device_code_hash, user_code_hash, status, label, provider, subject, email,
	client_ip, last_polled_at, created_at, expires_at`

func pendingDest(p *store.PendingAuthorization) []any {
	return []any{&p.ID, &p.DeviceCodeHash, &p.UserCodeHash, &p.Status, &p.Label, &p.Provider, &p.Subject, &p.Email,
		&p.ClientIP, nullTimeCol{&p.LastPolledAt}, timeCol{&p.CreatedAt}, timeCol{&p.ExpiresAt}}
}

// CreatePendingAuthorization inserts p; a duplicate code hash is
// store.ErrConflict.
func (db *DB) CreatePendingAuthorization(ctx context.Context, p *store.PendingAuthorization) error {
	_, err := db.exec(ctx, db.writer, `INSERT INTO pending_authorizations (`+pendingCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.DeviceCodeHash, p.UserCodeHash, p.Status, p.Label, p.Provider, p.Subject, p.Email,
		p.ClientIP, nullTimeArg(p.LastPolledAt), timeArg(p.CreatedAt), timeArg(p.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create pending authorization: %w", err)
	}
	return nil
}

// GetPendingAuthorization loads an authorization by ID.
func (db *DB) GetPendingAuthorization(ctx context.Context, id string) (*store.PendingAuthorization, error) {
	return db.getPending(ctx, db.reader, `id = ?`, id)
}

// GetPendingAuthorizationByUserCode loads an authorization by the hash of
// its user code.
func (db *DB) GetPendingAuthorizationByUserCode(ctx context.Context, hash string) (*store.PendingAuthorization, error) {
	return db.getPending(ctx, db.reader, `user_code_hash = ?`, hash)
}

func (db *DB) getPending(ctx context.Context, q querier, cond string, arg any) (*store.PendingAuthorization, error) {
	var p store.PendingAuthorization
	if err := db.queryRow(ctx, q, `SELECT `+pendingCols+` FROM pending_authorizations WHERE `+cond,
		[]any{arg}, pendingDest(&p)...); err != nil {
		return nil, fmt.Errorf("load pending authorization: %w", err)
	}
	return &p, nil
}

// DecidePendingAuthorization approves or denies a pending authorization.
func (db *DB) DecidePendingAuthorization(ctx context.Context, id, status, provider, subject, email string, now time.Time) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `UPDATE pending_authorizations SET status = ?, provider = ?, subject = ?, email = ?
			WHERE id = ? AND status = 'pending' AND expires_at > ?`, status, provider, subject, email, id, timeArg(now))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var exists bool
		if err := db.queryRow(ctx, tx, `SELECT EXISTS (SELECT 1 FROM pending_authorizations WHERE id = ?)`,
			[]any{id}, &exists); err != nil {
			return err
		}
		if !exists {
			return store.ErrNotFound
		}
		return fmt.Errorf("already decided or expired: %w", store.ErrConflict)
	})
	if err != nil {
		return fmt.Errorf("decide pending authorization: %w", err)
	}
	return nil
}

// PollDeviceCode answers one poll; see store.Store. The single writer
// serialises concurrent polls, so only one of them can redeem a code.
func (db *DB) PollDeviceCode(ctx context.Context, hash string, now time.Time, interval time.Duration, tok *store.AgentToken) (string, error) {
	var outcome string
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		p, err := db.getPending(ctx, tx, `device_code_hash = ?`, hash)
		if err != nil {
			return err
		}
		outcome = store.PollOutcome(p, now, interval)
		if outcome != store.PollIssued {
			_, err := db.exec(ctx, tx, `UPDATE pending_authorizations SET last_polled_at = ?,
				status = CASE WHEN ? THEN 'expired' ELSE status END WHERE id = ?`,
				timeArg(now), outcome == store.PollExpired, p.ID)
			return err
		}
		tok.Provider, tok.Subject, tok.Email, tok.Label = p.Provider, p.Subject, p.Email, p.Label
		if _, err := db.exec(ctx, tx, `INSERT INTO agent_tokens (`+agentCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			tok.ID, tok.Hash, tok.Prefix, tok.Provider, tok.Subject, tok.Email, tok.Label, tok.IsActive,
			timeArg(tok.CreatedAt), nullTimeArg(tok.LastAuthenticatedAt), timeArg(tok.AuthExpiresAt)); err != nil {
			return err
		}
		_, err = db.exec(ctx, tx, `DELETE FROM pending_authorizations WHERE id = ?`, p.ID)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("poll device code: %w", err)
	}
	return outcome, nil
}

// DeletePendingAuthorizationsExpiredBefore deletes the authorizations that
// expired earliest before t, at most limit of them.
func (db *DB) DeletePendingAuthorizationsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM pending_authorizations WHERE rowid IN
		(SELECT rowid FROM pending_authorizations WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete pending authorizations: %w", err)
	}
	return n, nil
}

const agentCols = `id, token_hash, prefix, provider, subject, email, label, is_active,
	created_at, last_authenticated_at, auth_expires_at`

func agentDest(a *store.AgentToken) []any {
	return []any{&a.ID, &a.Hash, &a.Prefix, &a.Provider, &a.Subject, &a.Email, &a.Label, &a.IsActive,
		timeCol{&a.CreatedAt}, nullTimeCol{&a.LastAuthenticatedAt}, timeCol{&a.AuthExpiresAt}}
}

// GetAgentToken loads an agent token by ID.
func (db *DB) GetAgentToken(ctx context.Context, id string) (*store.AgentToken, error) {
	return db.getAgent(ctx, `id = ?`, id)
}

// GetAgentTokenByHash loads an agent token by the hex SHA-256 of its
// secret.
func (db *DB) GetAgentTokenByHash(ctx context.Context, hash string) (*store.AgentToken, error) {
	return db.getAgent(ctx, `token_hash = ?`, hash)
}

func (db *DB) getAgent(ctx context.Context, cond string, arg any) (*store.AgentToken, error) {
	var a store.AgentToken
	if err := db.queryRow(ctx, db.reader, `SELECT `+agentCols+` FROM agent_tokens WHERE `+cond,
		[]any{arg}, agentDest(&a)...); err != nil {
		return nil, fmt.Errorf("load agent token: %w", err)
	}
	return &a, nil
}

// ListAgentTokens returns a page of agent tokens, newest first, and the
// number of matching ones.
func (db *DB) ListAgentTokens(ctx context.Context, f store.AgentTokenFilter) ([]*store.AgentToken, int, error) {
	var w where
	if f.Email != "" {
		w.add("lower(email) = lower(?)", f.Email)
	}
	if f.Provider != "" || f.Subject != "" {
		w.add("provider = ?", f.Provider)
		w.add("subject = ?", f.Subject)
	}
	if f.Active != nil {
		w.add("is_active = ?", *f.Active)
	}
	limit, offset := page(f.Page)
	var (
		out   []*store.AgentToken
		total int
	)
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := db.queryRow(ctx, tx, `SELECT COUNT(*) FROM agent_tokens`+w.String(), w.args, &total); err != nil {
			return err
		}
		rows, err := db.query(ctx, tx, `SELECT `+agentCols+` FROM agent_tokens`+w.String()+
			` ORDER BY created_at DESC, id LIMIT ? OFFSET ?`, append(w.args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a store.AgentToken
			if err := rows.Scan(agentDest(&a)...); err != nil {
				return err
			}
			out = append(out, &a)
		}
		return translate(rows.Err())
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list agent tokens: %w", err)
	}
	return out, total, nil
}

// RevokeAgentToken deactivates an agent token.
func (db *DB) RevokeAgentToken(ctx context.Context, id string) error {
	res, err := db.exec(ctx, db.writer, `UPDATE agent_tokens SET is_active = 0 WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("revoke agent token: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("revoke agent token: %w", errors.Join(err, store.ErrNotFound))
	}
	return nil
}

// DeleteAgentTokensExpiredBefore deletes the agent tokens that expired
// earliest before t, at most limit of them.
func (db *DB) DeleteAgentTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM agent_tokens WHERE rowid IN
		(SELECT rowid FROM agent_tokens WHERE auth_expires_at < ? ORDER BY auth_expires_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete agent tokens: %w", err)
	}
	return n, nil
}

const sessionCols = `id, secret_hash, oidc_state, oidc_nonce, pkce_verifier, pending_id, return_to, provider, subject,
	email, created_at, expires_at`

// CreateSSOSession inserts s.
func (db *DB) CreateSSOSession(ctx context.Context, s *store.SSOSession) error {
	_, err := db.exec(ctx, db.writer, `INSERT INTO sso_sessions (`+sessionCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.SecretHash, s.State, s.Nonce, s.Verifier, nullIDArg(s.PendingID), s.ReturnTo, s.Provider, s.Subject, s.Email,
		timeArg(s.CreatedAt), timeArg(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create sso session: %w", err)
	}
	return nil
}

// GetSSOSessionByHash loads a session by the hash of its cookie secret.
func (db *DB) GetSSOSessionByHash(ctx context.Context, hash string) (*store.SSOSession, error) {
	var s store.SSOSession
	if err := db.queryRow(ctx, db.reader, `SELECT `+sessionCols+` FROM sso_sessions WHERE secret_hash = ?`,
		[]any{hash}, &s.ID, &s.SecretHash, &s.State, &s.Nonce, &s.Verifier, nullIDCol{&s.PendingID}, &s.ReturnTo,
		&s.Provider, &s.Subject, &s.Email, timeCol{&s.CreatedAt}, timeCol{&s.ExpiresAt}); err != nil {
		return nil, fmt.Errorf("load sso session: %w", err)
	}
	return &s, nil
}

// CompleteSSOSession records the identity of a session whose login is in
// flight.
func (db *DB) CompleteSSOSession(ctx context.Context, id, provider, subject, email string) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `UPDATE sso_sessions SET provider = ?, subject = ?, email = ?,
			oidc_state = '', oidc_nonce = '', pkce_verifier = '' WHERE id = ? AND oidc_state <> ''`,
			provider, subject, email, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var exists bool
		if err := db.queryRow(ctx, tx, `SELECT EXISTS (SELECT 1 FROM sso_sessions WHERE id = ?)`,
			[]any{id}, &exists); err != nil {
			return err
		}
		if !exists {
			return store.ErrNotFound
		}
		return fmt.Errorf("login already completed: %w", store.ErrConflict)
	})
	if err != nil {
		return fmt.Errorf("complete sso session: %w", err)
	}
	return nil
}

// DeleteSSOSession deletes a session.
func (db *DB) DeleteSSOSession(ctx context.Context, id string) error {
	if _, err := db.exec(ctx, db.writer, `DELETE FROM sso_sessions WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete sso session: %w", err)
	}
	return nil
}

// DeleteSSOSessionsExpiredBefore deletes the sessions that expired
// earliest before t, at most limit of them.
func (db *DB) DeleteSSOSessionsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM sso_sessions WHERE rowid IN
		(SELECT rowid FROM sso_sessions WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete sso sessions: %w", err)
	}
	return n, nil
}

// CountAuthFailure counts one failed attempt of identifier.
func (db *DB) CountAuthFailure(ctx context.Context, identifier string, now, resetBefore time.Time) (int, error) {
	var n int
	err := db.queryRow(ctx, db.writer, `INSERT INTO auth_rate_limits (identifier, failed_attempts, last_attempt_at)
		VALUES (?, 1, ?)
		ON CONFLICT (identifier) DO UPDATE SET
			failed_attempts = CASE WHEN auth_rate_limits.last_attempt_at < ? THEN 1
				ELSE auth_rate_limits.failed_attempts + 1 END,
			last_attempt_at = max(auth_rate_limits.last_attempt_at, excluded.last_attempt_at)
		RETURNING failed_attempts`, []any{identifier, timeArg(now), timeArg(resetBefore)}, &n)
	if err != nil {
		return 0, fmt.Errorf("count auth failure: %w", err)
	}
	return n, nil
}

// GetAuthBlock returns the row of identifier.
func (db *DB) GetAuthBlock(ctx context.Context, identifier string) (*store.AuthBlock, error) {
	var (
		b     store.AuthBlock
		until *time.Time
	)
	if err := db.queryRow(ctx, db.reader, `SELECT identifier, failed_attempts, last_attempt_at, blocked_until
		FROM auth_rate_limits WHERE identifier = ?`, []any{identifier},
		&b.Identifier, &b.FailedAttempts, timeCol{&b.LastAttemptAt}, nullTimeCol{&until}); err != nil {
		return nil, fmt.Errorf("load auth block: %w", err)
	}
	if until != nil {
		b.BlockedUntil = *until
	}
	return &b, nil
}
