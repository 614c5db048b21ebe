// Package quota enforces a token's max_requests exactly: never more
// admitted requests than the quota, whatever the concurrency and the number
// of proxy replicas (SPEC §7).
//
// Three Counters exist; cmd/proxy picks one: DB (PostgreSQL without Redis:
// one atomic conditional UPDATE per request), Memory (SQLite, a single
// process: in-process atomic counters) and Redis (PostgreSQL with Redis: an
// atomic Redis counter, reconciled to the database through batched
// touches). All pass the suite in package quotatest.
package quota

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// ErrUnavailable is wrapped by the errors of a Counter that cannot decide
// because its backend is away and it is configured to fail closed. The HTTP
// layer answers 503 with Retry-After.
var ErrUnavailable = errors.New("quota counter unavailable")

// Counter counts one request against t.MaxRequests. It returns nil when
// admitted, an error wrapping store.ErrQuotaExceeded when the quota is used
// up, or another error when it cannot decide. A token with nil MaxRequests
// is always admitted.
//
// An admitted request is counted in the database's request_count and
// last_used_at, directly or through a Toucher: the caller must not Touch it
// again. Implementations are safe for concurrent use.
type Counter interface {
	Consume(ctx context.Context, t *store.Token) error
}

// Toucher receives per-token request counts for batched write-back to the
// database (usage.Recorder satisfies it). Touch must not block.
type Toucher interface {
	Touch(tokenID string, at time.Time)
}

// DB counts in the database with store.ConsumeToken: one atomic conditional
// UPDATE per request, exact across replicas. It is the Counter for
// PostgreSQL without Redis.
type DB struct {
	st store.Store
}

var _ Counter = (*DB)(nil)

// NewDB returns a Counter on st.
func NewDB(st store.Store) *DB {
	return &DB{st: st}
}

// Consume implements Counter. The update also advances request_count and
// last_used_at, so nothing is Touched.
func (d *DB) Consume(ctx context.Context, t *store.Token) error {
	if _, err := d.st.ConsumeToken(ctx, t.ID, time.Now()); err != nil {
		return fmt.Errorf("consume quota: %w", err)
	}
	return nil
}

// Memory counts in process: one atomic counter per token, seeded from
// t.RequestCount on the token's first use and written back through the
// Toucher. It is exact for a single process (SQLite is single-instance),
// never across replicas. It holds one counter per quota token in use and
// forgets those of expired tokens.
type Memory struct {
	toucher Toucher
	counts  sync.Map // token ID → *memCount
	added   atomic.Int64
}

// memCount is one token's count; it is forgotten once the token expired
// (an expired token is refused before its quota is looked at).
type memCount struct {
	n       atomic.Int64
	expires time.Time
}

// sweepEvery is how many new counters trigger a sweep of expired ones, so
// a process that sees many short-lived tokens keeps bounded memory.
const sweepEvery = 1024

var _ Counter = (*Memory)(nil)

// NewMemory returns an in-process Counter that Touches every admitted
// request on t.
func NewMemory(t Toucher) *Memory {
	return &Memory{toucher: t}
}

// Consume implements Counter; it never fails except for an exceeded quota.
func (m *Memory) Consume(_ context.Context, t *store.Token) error {
	now := time.Now()
	if t.MaxRequests != nil {
		c, ok := m.counts.Load(t.ID)
		if !ok {
			seed := &memCount{expires: t.ExpiresAt}
			seed.n.Store(t.RequestCount)
			var loaded bool
			if c, loaded = m.counts.LoadOrStore(t.ID, seed); !loaded && m.added.Add(1)%sweepEvery == 0 {
				m.sweep(now)
			}
		}
		n := &c.(*memCount).n
		for {
			v := n.Load()
			if v >= *t.MaxRequests {
				return fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded)
			}
			if n.CompareAndSwap(v, v+1) {
				break
			}
		}
	}
	m.toucher.Touch(t.ID, now)
	return nil
}

// sweep forgets the counters of expired tokens.
func (m *Memory) sweep(now time.Time) {
	m.counts.Range(func(id, c any) bool {
		if c.(*memCount).expires.Before(now) {
			m.counts.Delete(id)
		}
		return true
	})
}

// Len reports how many counters are held.
func (m *Memory) Len() int {
	n := 0
	m.counts.Range(func(any, any) bool { n++; return true })
	return n
}
