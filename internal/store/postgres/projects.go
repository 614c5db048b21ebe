package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const projectColumns = `id, name, provider, base_url, api_version, api_key_encrypted, api_key_hint,
	is_active, deactivated_at, rpm_limit, tpm_limit, allowed_origins, allowed_models, cache_ttl_seconds,
	created_at, updated_at`

// projectDest lists the scan destinations of projectColumns.
func projectDest(p *store.Project) []any {
	return []any{&p.ID, &p.Name, &p.Provider, &p.BaseURL, &p.APIVersion, &p.APIKeyEncrypted, &p.APIKeyHint,
		&p.IsActive, &p.DeactivatedAt, &p.RPMLimit, &p.TPMLimit, store.ListScanner(&p.AllowedOrigins), store.ListScanner(&p.AllowedModels),
		&p.CacheTTLSeconds, &p.CreatedAt, &p.UpdatedAt}
}

// projectUTC puts the times of a scanned project in UTC.
func projectUTC(p *store.Project) {
	p.DeactivatedAt = utc(p.DeactivatedAt)
	p.CreatedAt = p.CreatedAt.UTC()
	p.UpdatedAt = p.UpdatedAt.UTC()
}

func scanProject(row pgx.Row) (*store.Project, error) {
	var p store.Project
	if err := row.Scan(projectDest(&p)...); err != nil {
		return nil, err
	}
	projectUTC(&p)
	return &p, nil
}

// CreateProject inserts p; a duplicate name is store.ErrConflict.
func (db *DB) CreateProject(ctx context.Context, p *store.Project) error {
	origins, models, err := projectLists(p)
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `INSERT INTO projects (`+projectColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		p.ID, p.Name, p.Provider, p.BaseURL, p.APIVersion, p.APIKeyEncrypted, p.APIKeyHint,
		p.IsActive, p.DeactivatedAt, p.RPMLimit, p.TPMLimit, origins, models, p.CacheTTLSeconds, p.CreatedAt, p.UpdatedAt)
	if err != nil {
		return fmt.Errorf("create project: %w", translate(err))
	}
	return nil
}

// GetProject loads a project by ID; store.ErrNotFound when there is none.
func (db *DB) GetProject(ctx context.Context, id string) (*store.Project, error) {
	if !isUUID(id) {
		return nil, fmt.Errorf("load project: %w", store.ErrNotFound)
	}
	return db.getProject(ctx, `id = $1`, id)
}

// GetProjectByName loads a project by name; store.ErrNotFound when there is
// none.
func (db *DB) GetProjectByName(ctx context.Context, name string) (*store.Project, error) {
	return db.getProject(ctx, `name = $1`, name)
}

func (db *DB) getProject(ctx context.Context, cond string, arg any) (*store.Project, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	p, err := scanProject(c.QueryRow(ctx, `SELECT `+projectColumns+` FROM projects WHERE `+cond, arg))
	if err != nil {
		return nil, fmt.Errorf("load project: %w", translate(err))
	}
	return p, nil
}

// ListAllowedOrigins returns the distinct allowed origins of the active
// projects, sorted.
func (db *DB) ListAllowedOrigins(ctx context.Context) ([]string, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, `SELECT DISTINCT o.origin FROM projects p, jsonb_array_elements_text(p.allowed_origins) AS o (origin)
		WHERE p.is_active ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list allowed origins: %w", translate(err))
	}
	origins, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list allowed origins: %w", translate(err))
	}
	return origins, nil
}

// ListProjects returns a page of projects, oldest first, and the number of
// matching projects.
func (db *DB) ListProjects(ctx context.Context, f store.ProjectFilter) ([]*store.Project, int, error) {
	var q query
	if f.Active != nil {
		q.where(`is_active = ?`, *f.Active)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer c.Release()
	var total int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM projects`+q.clause(), q.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count projects: %w", translate(err))
	}
	limit, args := q.page(f.Page)
	rows, err := c.Query(ctx, `SELECT `+projectColumns+` FROM projects`+q.clause()+
		` ORDER BY created_at, id`+limit, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list projects: %w", translate(err))
	}
	projects, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Project, error) { return scanProject(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list projects: %w", translate(err))
	}
	return projects, total, nil
}

// UpdateProject writes every mutable field of p; store.ErrNotFound when the
// project does not exist, store.ErrConflict when the new name is taken.
func (db *DB) UpdateProject(ctx context.Context, p *store.Project) error {
	if !isUUID(p.ID) {
		return fmt.Errorf("update project: %w", store.ErrNotFound)
	}
	origins, models, err := projectLists(p)
	if err != nil {
		return fmt.Errorf("update project: %w", err)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `UPDATE projects SET name = $2, base_url = $3, api_version = $4,
		api_key_encrypted = $5, api_key_hint = $6, is_active = $7, deactivated_at = $8,
		rpm_limit = $9, tpm_limit = $10, allowed_origins = $11, allowed_models = $12,
		cache_ttl_seconds = $13, updated_at = $14
		WHERE id = $1`,
		p.ID, p.Name, p.BaseURL, p.APIVersion, p.APIKeyEncrypted, p.APIKeyHint, p.IsActive, p.DeactivatedAt,
		p.RPMLimit, p.TPMLimit, origins, models, p.CacheTTLSeconds, p.UpdatedAt)
	if err != nil {
		return fmt.Errorf("update project: %w", translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update project: %w", store.ErrNotFound)
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
