// Package replica announces this proxy process in the replicas table, which
// the console's cluster page lists (SPEC §6.8): a Heartbeat upserts the
// process's row when it starts and every Interval, and deletes it when it
// stops, so a cleanly stopped replica leaves the page at once. A crashed
// one stops being seen and is swept by retention a day later.
//
// A heartbeat is one tiny write, off the request path; a failed one is
// logged (at most once every logEvery) and retried at the next beat, and
// never affects serving.
package replica

import (
	"context"
	"log/slog"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// Interval is the time between two heartbeats of a replica.
const Interval = 10 * time.Second

// beatTimeout bounds one heartbeat's write, and the final delete, which
// delays shutdown by at most that much when the database hangs.
const beatTimeout = 2 * time.Second

// logEvery is the least time between two log lines about failing
// heartbeats while they keep failing.
const logEvery = 5 * time.Minute

// Store is the part of store.Store a Heartbeat uses; store.Store
// satisfies it.
type Store interface {
	UpsertReplica(ctx context.Context, r *store.Replica) error
	DeleteReplica(ctx context.Context, id string) error
}

var _ Store = store.Store(nil)

// Heartbeat keeps one replica's row up to date. Run it once.
type Heartbeat struct {
	store  Store
	self   store.Replica
	logger *slog.Logger
}

// New returns a Heartbeat for self (ID, Hostname, Version and StartedAt
// set; LastSeenAt is set at each beat) writing to st. logger nil discards.
func New(st Store, self store.Replica, logger *slog.Logger) *Heartbeat {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Heartbeat{store: st, self: self, logger: logger}
}

// Run upserts the replica's row now and every Interval until ctx ends,
// then deletes it and returns nil. Failures are logged, never returned:
// the row is informational, and the next beat retries.
func (h *Heartbeat) Run(ctx context.Context) error {
	ticker := time.NewTicker(Interval)
	defer ticker.Stop()
	var (
		failures int       // consecutive failed beats
		warned   bool      // a failure of this run was logged
		logged   time.Time // when a failure was last logged
	)
	for {
		err := h.beat(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			failures++
			if time.Since(logged) >= logEvery {
				h.logger.Warn("replica heartbeat failed; the console may show this replica as gone",
					"replica_id", h.self.ID, "failures", failures, "err", err)
				warned, logged = true, time.Now()
			}
		default:
			if warned {
				h.logger.Info("replica heartbeat recovered", "replica_id", h.self.ID, "failures", failures)
			}
			failures, warned = 0, false
		}
		select {
		case <-ctx.Done():
			h.leave(ctx)
			return nil
		case <-ticker.C:
		}
	}
}

func (h *Heartbeat) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, beatTimeout)
	defer cancel()
	r := h.self
	r.LastSeenAt = time.Now()
	return h.store.UpsertReplica(ctx, &r)
}

// leave deletes the replica's row on the way out; ctx has ended, so the
// delete gets a context of its own.
func (h *Heartbeat) leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), beatTimeout)
	defer cancel()
	if err := h.store.DeleteReplica(ctx, h.self.ID); err != nil {
		h.logger.Warn("delete this replica's row; the console shows it as gone once its heartbeats stop",
			"replica_id", h.self.ID, "err", err)
	}
}
