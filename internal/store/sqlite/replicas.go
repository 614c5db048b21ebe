package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const replicaCols = `id, hostname, version, started_at, last_seen_at`

// UpsertReplica inserts r or refreshes its row. Times are fixed-width
// text, so max() of two is the later.
func (db *DB) UpsertReplica(ctx context.Context, r *store.Replica) error {
	_, err := db.exec(ctx, db.writer, `INSERT INTO replicas (`+replicaCols+`) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, version = excluded.version,
			last_seen_at = max(replicas.last_seen_at, excluded.last_seen_at)`,
		r.ID, r.Hostname, r.Version, timeArg(r.StartedAt), timeArg(r.LastSeenAt))
	if err != nil {
		return fmt.Errorf("upsert replica: %w", err)
	}
	return nil
}

// ListReplicas returns the latest started replicas.
func (db *DB) ListReplicas(ctx context.Context, limit int) ([]*store.Replica, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list replicas: limit %d must be positive", limit)
	}
	rows, err := db.query(ctx, db.reader, `SELECT `+replicaCols+` FROM replicas ORDER BY started_at DESC, id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	var out []*store.Replica
	for rows.Next() {
		var r store.Replica
		if err := rows.Scan(&r.ID, &r.Hostname, &r.Version, timeCol{&r.StartedAt}, timeCol{&r.LastSeenAt}); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}

// DeleteReplica deletes the replica with id.
func (db *DB) DeleteReplica(ctx context.Context, id string) error {
	if _, err := db.exec(ctx, db.writer, `DELETE FROM replicas WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete replica: %w", err)
	}
	return nil
}

// DeleteReplicasSeenBefore deletes replicas not seen since t.
func (db *DB) DeleteReplicasSeenBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("delete replicas: limit %d must be positive", limit)
	}
	res, err := db.exec(ctx, db.writer, `DELETE FROM replicas WHERE id IN
		(SELECT id FROM replicas WHERE last_seen_at < ? ORDER BY last_seen_at LIMIT ?)`, timeArg(t), limit)
	if err != nil {
		return 0, fmt.Errorf("delete replicas: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete replicas: %w", err)
	}
	return n, nil
}
