package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const projectCols = `id, name, provider, base_url, api_version, api_key_encrypted, api_key_hint,
	is_active, deactivated_at, rpm_limit, tpm_limit, allowed_origins, allowed_models, cache_ttl_seconds,
	created_at, updated_at`

func projectDest(p *store.Project) []any {
	return []any{&p.ID, &p.Name, &p.Provider, &p.BaseURL, &p.APIVersion, &p.APIKeyEncrypted, &p.APIKeyHint,
		&p.IsActive, nullTimeCol{&p.DeactivatedAt}, &p.RPMLimit, &p.TPMLimit, store.ListScanner(&p.AllowedOrigins),
		store.ListScanner(&p.AllowedModels), &p.CacheTTLSeconds, timeCol{&p.CreatedAt}, timeCol{&p.UpdatedAt}}
}

// CreateProject inserts p; a duplicate ID or name is store.ErrConflict.
func (db *DB) CreateProject(ctx context.Context, p *store.Project) error {
	origins, models, err := projectLists(p)
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	_, err = db.exec(ctx, db.writer, `INSERT INTO projects (`+projectCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.Name, p.Provider, p.BaseURL, p.APIVersion, p.APIKeyEncrypted, p.APIKeyHint,
		p.IsActive, nullTimeArg(p.DeactivatedAt), p.RPMLimit, p.TPMLimit, origins, models, p.CacheTTLSeconds,
		timeArg(p.CreatedAt), timeArg(p.UpdatedAt))
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	return nil
}

// GetProject loads a project by ID; store.ErrNotFound if there is none.
func (db *DB) GetProject(ctx context.Context, id string) (*store.Project, error) {
	var p store.Project
	if err := db.queryRow(ctx, db.reader, `SELECT `+projectCols+` FROM projects WHERE id = ?`,
		[]any{id}, projectDest(&p)...); err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	return &p, nil
}

// GetProjectByName loads a project by name; store.ErrNotFound if there is
// none.
func (db *DB) GetProjectByName(ctx context.Context, name string) (*store.Project, error) {
	var p store.Project
	if err := db.queryRow(ctx, db.reader, `SELECT `+projectCols+` FROM projects WHERE name = ?`,
		[]any{name}, projectDest(&p)...); err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	return &p, nil
}

// ListAllowedOrigins returns the distinct allowed origins of the active
// projects, sorted.
func (db *DB) ListAllowedOrigins(ctx context.Context) ([]string, error) {
	rows, err := db.query(ctx, db.reader, `SELECT DISTINCT o.value FROM projects p, json_each(p.allowed_origins) AS o
		WHERE p.is_active ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list allowed origins: %w", err)
	}
	defer rows.Close()
	var origins []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, fmt.Errorf("list allowed origins: %w", translate(err))
		}
		origins = append(origins, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list allowed origins: %w", translate(err))
	}
	return origins, nil
}

// ListProjects returns a page of projects, newest first, and the number of
// projects matching f.
func (db *DB) ListProjects(ctx context.Context, f store.ProjectFilter) ([]*store.Project, int, error) {
	var w where
	if f.Active != nil {
		w.add("is_active = ?", *f.Active)
	}
	limit, offset := page(f.Page)
	var (
		out   []*store.Project
		total int
	)
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := db.queryRow(ctx, tx, `SELECT COUNT(*) FROM projects`+w.String(), w.args, &total); err != nil {
			return err
		}
		rows, err := db.query(ctx, tx, `SELECT `+projectCols+` FROM projects`+w.String()+
			` ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`, append(w.args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p store.Project
			if err := rows.Scan(projectDest(&p)...); err != nil {
				return err
			}
			out = append(out, &p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list projects: %w", err)
	}
	return out, total, nil
}

// UpdateProject writes every mutable field of p; store.ErrNotFound if the
// project does not exist, store.ErrConflict if the new name is taken.
func (db *DB) UpdateProject(ctx context.Context, p *store.Project) error {
	origins, models, err := projectLists(p)
	if err != nil {
		return fmt.Errorf("update project: %w", err)
	}
	res, err := db.exec(ctx, db.writer, `UPDATE projects SET name = ?, base_url = ?, api_version = ?,
		api_key_encrypted = ?, api_key_hint = ?, is_active = ?, deactivated_at = ?, rpm_limit = ?, tpm_limit = ?,
		allowed_origins = ?, allowed_models = ?, cache_ttl_seconds = ?, updated_at = ? WHERE id = ?`,
		p.Name, p.BaseURL, p.APIVersion, p.APIKeyEncrypted, p.APIKeyHint, p.IsActive, nullTimeArg(p.DeactivatedAt),
		p.RPMLimit, p.TPMLimit, origins, models, p.CacheTTLSeconds, timeArg(p.UpdatedAt), p.ID)
	if err != nil {
		return fmt.Errorf("update project: %w", err)
	}
	return oneRow(res, "update project")
}

// oneRow turns an update that matched nothing into store.ErrNotFound.
func oneRow(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// projectLists encodes the list columns of p.
func projectLists(p *store.Project) (origins, models string, err error) {
	if origins, err = store.ListValue(p.AllowedOrigins); err != nil {
		return "", "", err
	}
	models, err = store.ListValue(p.AllowedModels)
	return origins, models, err
}
