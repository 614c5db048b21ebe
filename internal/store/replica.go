package store

import (
	"context"
	"time"
)

// Replica is a proxy process as it last reported itself (a row of
// replicas): ID is random per process start, Version the build's version
// string ("" when the binary has none).
type Replica struct {
	ID         string
	Hostname   string
	Version    string
	StartedAt  time.Time
	LastSeenAt time.Time
}

// ReplicaStore keeps the replicas table, which the console's cluster page
// lists (SPEC §6.8). Store includes it.
type ReplicaStore interface {
	// UpsertReplica inserts r, or updates the row of r.ID: its hostname
	// and version, and last_seen_at moved forward to r.LastSeenAt (never
	// backwards); started_at keeps its first value.
	UpsertReplica(ctx context.Context, r *Replica) error
	// ListReplicas returns at most limit (> 0) replicas, the latest
	// started first (ties by ID).
	ListReplicas(ctx context.Context, limit int) ([]*Replica, error)
	// DeleteReplica deletes the replica's row; an unknown one is not an
	// error.
	DeleteReplica(ctx context.Context, id string) error
	// DeleteReplicasSeenBefore deletes at most limit (> 0) replicas last
	// seen before t, earliest first, and returns how many it deleted.
	DeleteReplicasSeenBefore(ctx context.Context, t time.Time, limit int) (int64, error)
}
