package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const tokenCols = `id, project_id, token_hash, prefix, label, expires_at, max_requests, request_count,
	is_active, deactivated_at, rpm_limit, tpm_limit, allowed_models, created_at, last_used_at`

func tokenDest(t *store.Token) []any {
	return []any{&t.ID, &t.ProjectID, &t.Hash, &t.Prefix, &t.Label, timeCol{&t.ExpiresAt}, nullIntCol{&t.MaxRequests},
		&t.RequestCount, &t.IsActive, nullTimeCol{&t.DeactivatedAt}, &t.RPMLimit, &t.TPMLimit,
		store.ListScanner(&t.AllowedModels), timeCol{&t.CreatedAt}, nullTimeCol{&t.LastUsedAt}}
}

// CreateToken inserts t; an unknown project or a duplicate ID or hash is
// store.ErrConflict.
func (db *DB) CreateToken(ctx context.Context, t *store.Token) error {
	models, err := store.ListValue(t.AllowedModels)
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	_, err = db.exec(ctx, db.writer, `INSERT INTO tokens (`+tokenCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.ProjectID, t.Hash, t.Prefix, t.Label, timeArg(t.ExpiresAt), nullIntArg(t.MaxRequests),
		t.RequestCount, t.IsActive, nullTimeArg(t.DeactivatedAt), t.RPMLimit, t.TPMLimit, models,
		timeArg(t.CreatedAt), nullTimeArg(t.LastUsedAt))
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// GetToken loads a token by ID; store.ErrNotFound if there is none.
func (db *DB) GetToken(ctx context.Context, id string) (*store.Token, error) {
	var t store.Token
	if err := db.queryRow(ctx, db.reader, `SELECT `+tokenCols+` FROM tokens WHERE id = ?`,
		[]any{id}, tokenDest(&t)...); err != nil {
		return nil, fmt.Errorf("load token: %w", err)
	}
	return &t, nil
}

// tokenWithProject selects a token by hash joined to its project, the
// columns of tokenCols then projectCols.
var tokenWithProject = `SELECT ` + qualify("t", tokenCols) + `, ` + qualify("p", projectCols) + `
	FROM tokens t JOIN projects p ON p.id = t.project_id WHERE t.token_hash = ?`

// GetTokenAndProjectByHash loads the token whose secret has the hex SHA-256
// hash, and its project, in one query; store.ErrNotFound if there is no
// such token.
func (db *DB) GetTokenAndProjectByHash(ctx context.Context, hash string) (*store.Token, *store.Project, error) {
	var (
		t store.Token
		p store.Project
	)
	if err := db.queryRow(ctx, db.reader, tokenWithProject, []any{hash},
		append(tokenDest(&t), projectDest(&p)...)...); err != nil {
		return nil, nil, fmt.Errorf("load token and project: %w", err)
	}
	return &t, &p, nil
}

// ListTokens returns a page of tokens, newest first, and the number of
// tokens matching f.
func (db *DB) ListTokens(ctx context.Context, f store.TokenFilter) ([]*store.Token, int, error) {
	var w where
	if f.ProjectID != "" {
		w.add("project_id = ?", f.ProjectID)
	}
	if f.Active != nil {
		w.add("is_active = ?", *f.Active)
	}
	limit, offset := page(f.Page)
	var (
		out   []*store.Token
		total int
	)
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := db.queryRow(ctx, tx, `SELECT COUNT(*) FROM tokens`+w.String(), w.args, &total); err != nil {
			return err
		}
		rows, err := db.query(ctx, tx, `SELECT `+tokenCols+` FROM tokens`+w.String()+
			` ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`, append(w.args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t store.Token
			if err := rows.Scan(tokenDest(&t)...); err != nil {
				return err
			}
			out = append(out, &t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list tokens: %w", err)
	}
	return out, total, nil
}

// UpdateToken writes label, is_active, deactivated_at, max_requests, the
// limits and the allowed models of t; store.ErrNotFound if the token does
// not exist.
func (db *DB) UpdateToken(ctx context.Context, t *store.Token) error {
	models, err := store.ListValue(t.AllowedModels)
	if err != nil {
		return fmt.Errorf("update token: %w", err)
	}
	res, err := db.exec(ctx, db.writer, `UPDATE tokens SET label = ?, is_active = is_active AND ?, deactivated_at = COALESCE(deactivated_at, ?),
		max_requests = ?, rpm_limit = ?, tpm_limit = ?, allowed_models = ? WHERE id = ?`,
		t.Label, t.IsActive, nullTimeArg(t.DeactivatedAt), nullIntArg(t.MaxRequests), t.RPMLimit, t.TPMLimit, models, t.ID)
	if err != nil {
		return fmt.Errorf("update token: %w", err)
	}
	return oneRow(res, "update token")
}

// DeactivateProjectTokens deactivates every active token of a project at
// the given time and returns how many changed.
func (db *DB) DeactivateProjectTokens(ctx context.Context, projectID string, at time.Time) (int64, error) {
	res, err := db.exec(ctx, db.writer, `UPDATE tokens SET is_active = 0, deactivated_at = ?
		WHERE project_id = ? AND is_active = 1`, timeArg(at), projectID)
	if err != nil {
		return 0, fmt.Errorf("deactivate project tokens: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("deactivate project tokens: %w", err)
	}
	return n, nil
}

// ConsumeToken counts one request against the token's max_requests with a
// single conditional update and returns the new request_count.
// store.ErrQuotaExceeded when the quota is used up, store.ErrNotFound when
// the token does not exist.
func (db *DB) ConsumeToken(ctx context.Context, tokenID string, at time.Time) (int64, error) {
	var n int64
	err := db.queryRow(ctx, db.writer, `UPDATE tokens SET request_count = request_count + 1, last_used_at = ?
		WHERE id = ? AND (max_requests IS NULL OR request_count < max_requests) RETURNING request_count`,
		[]any{timeArg(at), tokenID}, &n)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("consume token: %w", err)
	}
	// Nothing matched: either there is no such token or its quota is used
	// up. Counts only grow, so the answer cannot change in between.
	var one int
	if err := db.queryRow(ctx, db.reader, `SELECT 1 FROM tokens WHERE id = ?`, []any{tokenID}, &one); err != nil {
		return 0, fmt.Errorf("consume token: %w", err)
	}
	return 0, fmt.Errorf("consume token: %w", store.ErrQuotaExceeded)
}

// ReserveRequests adds up to n requests to the token's request_count, no
// more than its max_requests leaves, and returns how many it added and the
// new count; store.ErrNotFound when the token does not exist. The read and
// the write share one immediate transaction on the single writer, so no
// other write comes between them.
func (db *DB) ReserveRequests(ctx context.Context, tokenID string, n int64) (granted, count int64, err error) {
	if n < 0 {
		return 0, 0, fmt.Errorf("reserve requests: negative n %d", n)
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var limit *int64
		if err := db.queryRow(ctx, tx, `SELECT request_count, max_requests FROM tokens WHERE id = ?`,
			[]any{tokenID}, &count, nullIntCol{&limit}); err != nil {
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
		_, err := db.exec(ctx, tx, `UPDATE tokens SET request_count = ? WHERE id = ?`, count, tokenID)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reserve requests: %w", err)
	}
	return granted, count, nil
}

// TouchTokens adds request counts and moves last_used_at forward (never
// back; a zero LastUsedAt leaves it alone) in one transaction, in ID order.
func (db *DB) TouchTokens(ctx context.Context, touches []store.TokenTouch) error {
	if len(touches) == 0 {
		return nil
	}
	sorted := slices.SortedFunc(slices.Values(touches), func(a, b store.TokenTouch) int {
		return cmp.Compare(a.TokenID, b.TokenID)
	})
	const q = `UPDATE tokens SET request_count = request_count + ?,
		last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END
		WHERE id = ?`
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		for _, t := range sorted {
			// NULL compares as unknown, so the CASE keeps last_used_at.
			var at any
			if !t.LastUsedAt.IsZero() {
				at = timeArg(t.LastUsedAt)
			}
			if _, err := db.exec(ctx, tx, q, t.Requests, at, at, t.TokenID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch tokens: %w", err)
	}
	return nil
}
