package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

var auditColumns = []string{"id", "created_at", "actor", "action", "outcome", "project_id", "token_id",
	"request_id", "client_ip", "method", "path", "reason", "metadata"}

const auditSelect = `SELECT id, created_at, actor, action, outcome, coalesce(project_id::text, ''),
	coalesce(token_id::text, ''), request_id, client_ip, method, path, reason, metadata FROM audit_events`

func scanAuditEvent(row pgx.Row) (*store.AuditEvent, error) {
	var (
		e        store.AuditEvent
		metadata []byte
	)
	err := row.Scan(&e.ID, &e.CreatedAt, &e.Actor, &e.Action, &e.Outcome, &e.ProjectID, &e.TokenID,
		&e.RequestID, &e.ClientIP, &e.Method, &e.Path, &e.Reason, &metadata)
	if err != nil {
		return nil, err
	}
	e.CreatedAt = e.CreatedAt.UTC()
	if err := json.Unmarshal(metadata, &e.Metadata); err != nil {
		return nil, fmt.Errorf("decode metadata: %w", err)
	}
	if len(e.Metadata) == 0 {
		e.Metadata = nil
	}
	return &e, nil
}

// InsertAuditEvents writes a batch of audit events with one COPY. Events
// without an ID get a new one; empty optional IDs are stored as NULL and a
// nil Metadata as an empty object.
func (db *DB) InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	values := make([][]any, len(events))
	for i, e := range events {
		id := e.ID
		if id == "" {
			id = uuid.NewString()
		}
		var ids [3]any
		for j, s := range []string{id, e.ProjectID, e.TokenID} {
			v, err := optionalUUID(s)
			if err != nil {
				return fmt.Errorf("insert audit events: %w", err)
			}
			ids[j] = v
		}
		metadata := []byte("{}")
		if len(e.Metadata) > 0 {
			var err error
			if metadata, err = json.Marshal(e.Metadata); err != nil {
				return fmt.Errorf("insert audit events: encode metadata: %w", err)
			}
		}
		values[i] = []any{ids[0], e.CreatedAt, e.Actor, e.Action, e.Outcome, ids[1], ids[2],
			e.RequestID, e.ClientIP, e.Method, e.Path, e.Reason, metadata}
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"audit_events"}, auditColumns, pgx.CopyFromRows(values)); err != nil {
		return fmt.Errorf("insert audit events: %w", translate(err))
	}
	return nil
}

// GetAuditEvent loads an audit event by ID; store.ErrNotFound when there is
// none.
func (db *DB) GetAuditEvent(ctx context.Context, id string) (*store.AuditEvent, error) {
	if !isUUID(id) {
		return nil, fmt.Errorf("load audit event: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	e, err := scanAuditEvent(c.QueryRow(ctx, auditSelect+` WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("load audit event: %w", translate(err))
	}
	return e, nil
}

// ListAuditEvents returns a page of audit events, newest first, and the
// number of matching events.
func (db *DB) ListAuditEvents(ctx context.Context, f store.AuditFilter) ([]*store.AuditEvent, int, error) {
	var q query
	for _, idf := range []struct{ col, id string }{{"project_id", f.ProjectID}, {"token_id", f.TokenID}} {
		if idf.id == "" {
			continue
		}
		if !isUUID(idf.id) {
			return nil, 0, nil
		}
		q.where(idf.col+` = ?`, idf.id)
	}
	if f.Action != "" {
		q.where(`action = ?`, f.Action)
	}
	if f.Outcome != "" {
		q.where(`outcome = ?`, f.Outcome)
	}
	if !f.From.IsZero() {
		q.where(`created_at >= ?`, f.From)
	}
	if !f.To.IsZero() {
		q.where(`created_at < ?`, f.To)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer c.Release()
	var total int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM audit_events`+q.clause(), q.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count audit events: %w", translate(err))
	}
	limit, args := q.page(f.Page)
	rows, err := c.Query(ctx, auditSelect+q.clause()+` ORDER BY created_at DESC, id DESC`+limit, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list audit events: %w", translate(err))
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.AuditEvent, error) { return scanAuditEvent(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list audit events: %w", translate(err))
	}
	return events, total, nil
}
