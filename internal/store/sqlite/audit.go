package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const auditCols = `id, created_at, actor, action, outcome, project_id, token_id, request_id, client_ip, method,
	path, reason, metadata`

// metadataCol scans the JSON metadata column.
type metadataCol struct{ dst *map[string]any }

func (c metadataCol) Scan(v any) error {
	var s sql.NullString
	if err := s.Scan(v); err != nil {
		return err
	}
	*c.dst = nil
	if err := json.Unmarshal([]byte(s.String), c.dst); err != nil {
		return fmt.Errorf("decode audit metadata: %w", err)
	}
	return nil
}

func auditDest(e *store.AuditEvent) []any {
	return []any{&e.ID, timeCol{&e.CreatedAt}, &e.Actor, &e.Action, &e.Outcome, nullIDCol{&e.ProjectID},
		nullIDCol{&e.TokenID}, &e.RequestID, &e.ClientIP, &e.Method, &e.Path, &e.Reason, metadataCol{&e.Metadata}}
}

// InsertAuditEvents writes events in one transaction; a duplicate ID is
// store.ErrConflict and writes nothing.
func (db *DB) InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error {
	meta := make([]string, len(events))
	for i, e := range events {
		meta[i] = "{}"
		if e.Metadata != nil {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return fmt.Errorf("encode audit metadata: %w", err)
			}
			meta[i] = string(b)
		}
	}
	cols := []string{"id", "created_at", "actor", "action", "outcome", "project_id", "token_id", "request_id",
		"client_ip", "method", "path", "reason", "metadata"}
	err := db.insertBatches(ctx, "audit_events", cols, len(events), func(dst []any, i int) []any {
		e := &events[i]
		return append(dst, e.ID, timeArg(e.CreatedAt), e.Actor, e.Action, e.Outcome, nullIDArg(e.ProjectID),
			nullIDArg(e.TokenID), e.RequestID, e.ClientIP, e.Method, e.Path, e.Reason, meta[i])
	})
	if err != nil {
		return fmt.Errorf("insert audit events: %w", err)
	}
	return nil
}

// GetAuditEvent loads an audit event by ID; store.ErrNotFound if there is
// none.
func (db *DB) GetAuditEvent(ctx context.Context, id string) (*store.AuditEvent, error) {
	var e store.AuditEvent
	if err := db.queryRow(ctx, db.reader, `SELECT `+auditCols+` FROM audit_events WHERE id = ?`,
		[]any{id}, auditDest(&e)...); err != nil {
		return nil, fmt.Errorf("load audit event: %w", err)
	}
	return &e, nil
}

// ListAuditEvents returns a page of audit events, newest first, and the
// number of events matching f.
func (db *DB) ListAuditEvents(ctx context.Context, f store.AuditFilter) ([]*store.AuditEvent, int, error) {
	var w where
	for _, c := range []struct{ col, v string }{
		{"action", f.Action}, {"outcome", f.Outcome}, {"project_id", f.ProjectID}, {"token_id", f.TokenID},
	} {
		if c.v != "" {
			w.add(c.col+" = ?", c.v)
		}
	}
	if !f.From.IsZero() {
		w.add("created_at >= ?", timeArg(f.From))
	}
	if !f.To.IsZero() {
		w.add("created_at < ?", timeArg(f.To))
	}
	limit, offset := page(f.Page)
	var (
		out   []*store.AuditEvent
		total int
	)
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := db.queryRow(ctx, tx, `SELECT COUNT(*) FROM audit_events`+w.String(), w.args, &total); err != nil {
			return err
		}
		rows, err := db.query(ctx, tx, `SELECT `+auditCols+` FROM audit_events`+w.String()+
			` ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`, append(w.args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e store.AuditEvent
			if err := rows.Scan(auditDest(&e)...); err != nil {
				return err
			}
			out = append(out, &e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list audit events: %w", err)
	}
	return out, total, nil
}
