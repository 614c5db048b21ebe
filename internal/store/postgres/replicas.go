package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const replicaCols = `id, hostname, version, started_at, last_seen_at`

// UpsertReplica inserts r or refreshes its row.
func (db *DB) UpsertReplica(ctx context.Context, r *store.Replica) error {
	err := db.execOne(ctx, `INSERT INTO replicas (`+replicaCols+`) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, version = EXCLUDED.version,
			last_seen_at = GREATEST(replicas.last_seen_at, EXCLUDED.last_seen_at)`,
		r.ID, r.Hostname, r.Version, r.StartedAt, r.LastSeenAt)
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
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, `SELECT `+replicaCols+` FROM replicas ORDER BY started_at DESC, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Replica, error) {
		var r store.Replica
		err := row.Scan(&r.ID, &r.Hostname, &r.Version, &r.StartedAt, &r.LastSeenAt)
		r.StartedAt, r.LastSeenAt = r.StartedAt.UTC(), r.LastSeenAt.UTC()
		return &r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", translate(err))
	}
	return out, nil
}

// DeleteReplica deletes the replica with id.
func (db *DB) DeleteReplica(ctx context.Context, id string) error {
	if err := db.execOne(ctx, `DELETE FROM replicas WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete replica: %w", err)
	}
	return nil
}

// DeleteReplicasSeenBefore deletes replicas not seen since t.
func (db *DB) DeleteReplicasSeenBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	if limit < 1 {
		return 0, fmt.Errorf("delete replicas: limit %d must be positive", limit)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `DELETE FROM replicas WHERE id IN
		(SELECT id FROM replicas WHERE last_seen_at < $1 ORDER BY last_seen_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete replicas: %w", translate(err))
	}
	return tag.RowsAffected(), nil
}
