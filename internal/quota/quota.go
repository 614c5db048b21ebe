// Package quota enforces a token's max_requests exactly: never more
// admitted requests than the quota, whatever the concurrency and the number
// of proxy replicas (SPEC §7).
//
// Three Counters exist; cmd/proxy picks one: DB (PostgreSQL without Redis:
// one atomic conditional UPDATE per request), Memory (SQLite, a single
// process: in-process counters serving blocks reserved in the database
// beforehand) and Redis (PostgreSQL with Redis: an
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
// Every admitted request, with or without a quota, is counted in the
// database's request_count and last_used_at: directly, in advance
// (Memory's reserved blocks) or through a Toucher; the caller must not
// Touch it again. Implementations are safe for concurrent use.
type Counter interface {
	Consume(ctx context.Context, t *store.Token) error
}

// Store is the part of store.Store the counters use; store.Store
// satisfies it.
type Store interface {
	GetToken(ctx context.Context, id string) (*store.Token, error)
	ConsumeToken(ctx context.Context, tokenID string, at time.Time) (int64, error)
	ReserveRequests(ctx context.Context, tokenID string, n int64) (granted, count int64, err error)
	TouchTokens(ctx context.Context, touches []store.TokenTouch) error
}

var _ Store = store.Store(nil)

// Toucher receives per-token request counts for batched write-back to the
// database (usage.Recorder satisfies it). Touch must not block.
type Toucher interface {
	Touch(tokenID string, at time.Time)
}

// DB counts in the database with store.ConsumeToken: one atomic conditional
// UPDATE per request, exact across replicas. It is the Counter for
// PostgreSQL without Redis.
type DB struct {
	st      Store
	toucher Toucher
}

var _ Counter = (*DB)(nil)

// NewDB returns a Counter on st; requests of tokens without max_requests
// are counted through toucher.
func NewDB(st Store, toucher Toucher) *DB {
	return &DB{st: st, toucher: toucher}
}

// Consume implements Counter. For a quota token the update also advances
// request_count and last_used_at; a token without one is Touched, in
// batches, without a database round trip.
func (d *DB) Consume(ctx context.Context, t *store.Token) error {
	if t.MaxRequests == nil {
		d.toucher.Touch(t.ID, time.Now())
		return nil
	}
	if _, err := d.st.ConsumeToken(ctx, t.ID, time.Now()); err != nil {
		return fmt.Errorf("consume quota: %w", err)
	}
	return nil
}

// Memory counts in process, for SQLite (a single process). It reserves a
// token's requests in the database in small blocks (store.ReserveRequests
// adds them to request_count) before serving them from memory, so the
// durable count never lags what was served: after kill -9 the unserved
// rest of each block is lost and the token serves that many fewer, never
// more (SPEC §7). Close gives the rest back, so after a graceful shutdown
// request_count is exactly what was served.
//
// A request waits for the database once per block (16 requests, more for
// a large quota: see MemoryOptions.Block; the last block of a quota is
// only what remains); the others take a mutex. One reservation
// per token is in flight at a time: concurrent requests for the token wait
// for it, or for their context. A reservation runs under its own timeout,
// not the request's context, since the waiting requests depend on it.
//
// Memory learns max_requests from the token each Consume is given (the
// auth cache drops a token when PATCH changes it). When it changes, the
// next request re-reads the durable count with a reservation before
// deciding, so a lowered quota is never exceeded: requests of a block
// beyond it stay reserved, unserved, until Close gives them back; a raised
// quota is served by new blocks. Requests a token served while it had no
// max_requests were counted in batches by the Toucher, so a quota set
// again may not yet see those of the last flush interval.
//
// Requests of tokens without max_requests are counted through the
// Toucher's Touch; served requests of quota tokens only move last_used_at
// (TouchLastUsed), their count being in the database already. The counter
// of an expired token is forgotten with the unserved rest of its block:
// the token refuses every request anyway.
//
// Memory is exact for a single process, never across replicas. It is safe
// for concurrent use.
type Memory struct {
	st      Store
	toucher LastUseToucher
	block   int64
	timeout time.Duration
	counts  sync.Map // token ID → *memCount
	added   atomic.Int64

	mu       sync.Mutex
	closed   bool           // Close has begun: no new reservations
	inflight sync.WaitGroup // reservations under way; Close waits for them
}

// memCount is one token's share of the database's request_count.
type memCount struct {
	expires time.Time // the token's expiry: past it the counter is garbage

	mu sync.Mutex
	// synced: served and left agree with the database as of the last
	// reservation, made under max_requests limit.
	synced bool
	limit  int64
	served int64         // request_count minus left: served, by this process or before it
	left   int64         // reserved in request_count, not served yet
	wait   chan struct{} // closed when the reservation in flight ends; nil when none is
}

// LastUseToucher is the Toucher of a Memory counter (usage.Recorder
// satisfies it). Touch counts a request of a token without max_requests;
// TouchLastUsed only moves last_used_at, for a request whose count is in
// the database already. Neither may block.
type LastUseToucher interface {
	Toucher
	TouchLastUsed(tokenID string, at time.Time)
}

// MemoryOptions configure a Memory counter; Store and Toucher are
// required.
type MemoryOptions struct {
	// Store holds the durable count: blocks are reserved in it, given back
	// by Close, and after Close each request is counted in it directly.
	Store   Store
	Toucher LastUseToucher
	// Block is the smallest block (default 16). A token reserves
	// max(Block, min(max_requests/64, 1024)) requests at once (the last
	// block being only what remains): that is the most it can lose to a
	// crash, and the number of requests per database write, so a large
	// quota costs one write per 1024 requests and loses at most 1/64 of
	// itself.
	Block int64
	// Timeout bounds one reservation (default 5s).
	Timeout time.Duration
}

// A token's block is a 1/blockFraction share of its quota, at most
// maxBlock requests (see MemoryOptions.Block).
const (
	blockFraction = 64
	maxBlock      = 1024
)

// sweepEvery is how many new counters trigger a sweep of expired ones, so
// a process that sees many short-lived tokens keeps bounded memory.
const sweepEvery = 1024

var _ Counter = (*Memory)(nil)

// NewMemory returns an in-process Counter. It does not touch the database.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.Block <= 0 {
		opts.Block = 16
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	return &Memory{st: opts.Store, toucher: opts.Toucher, block: opts.Block, timeout: opts.Timeout}
}

// Consume implements Counter. Besides ErrQuotaExceeded it fails with an
// error wrapping ErrUnavailable when a reservation fails, store.ErrNotFound
// when the token is gone from the database, or ctx's error when ctx ends
// while it waits for another request's reservation.
func (m *Memory) Consume(ctx context.Context, t *store.Token) error {
	now := time.Now()
	if t.MaxRequests == nil {
		m.toucher.Touch(t.ID, now)
		return nil
	}
	limit := *t.MaxRequests
	c := m.count(t, now)
	for {
		c.mu.Lock()
		if c.synced && c.limit == limit {
			if c.served >= limit {
				c.mu.Unlock()
				return fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded)
			}
			if c.left > 0 {
				c.left--
				c.served++
				c.mu.Unlock()
				m.toucher.TouchLastUsed(t.ID, now)
				return nil
			}
		}
		if wait := c.wait; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return fmt.Errorf("consume quota: %w", ctx.Err())
			}
		}
		return m.reserve(ctx, t.ID, c, limit, now)
	}
}

// reserve reserves a block for c and decides the request with it. It is
// called with c.mu held and no reservation in flight, and releases c.mu.
// Once Close has begun it counts the request in the database directly.
func (m *Memory) reserve(ctx context.Context, id string, c *memCount, limit int64, now time.Time) error {
	m.mu.Lock()
	closed := m.closed
	if !closed {
		m.inflight.Add(1)
	}
	m.mu.Unlock()
	if closed {
		c.mu.Unlock()
		_, err := m.st.ConsumeToken(ctx, id, now)
		return m.result(err)
	}
	defer m.inflight.Done()
	// At most a block is held. Before the first reservation served and
	// left are 0; after a change of max_requests served may be stale: the
	// database caps the grant, and a want of 0 still re-reads the count.
	block := max(m.block, min(limit/blockFraction, maxBlock))
	want := max(min(block-c.left, limit-c.served-c.left), 0)
	wait := make(chan struct{})
	c.wait = wait
	c.mu.Unlock()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.timeout)
	granted, count, err := m.st.ReserveRequests(rctx, id, want)
	cancel()

	c.mu.Lock()
	c.wait = nil
	close(wait)
	if err != nil {
		c.mu.Unlock()
		return m.result(err)
	}
	// Requests served from left meanwhile moved from left to served;
	// count covers both, so the difference is right whatever they did.
	c.left += granted
	c.served = count - c.left
	c.limit, c.synced = limit, true
	if c.served >= limit || c.left == 0 {
		c.mu.Unlock()
		return fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded)
	}
	c.left--
	c.served++
	c.mu.Unlock()
	m.toucher.TouchLastUsed(id, now)
	return nil
}

// result turns a store error into Consume's.
func (m *Memory) result(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrQuotaExceeded), errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("consume quota: %w", err)
	default:
		return fmt.Errorf("consume quota: %w: %w", ErrUnavailable, err)
	}
}

// count returns t's counter, creating it on first use.
func (m *Memory) count(t *store.Token, now time.Time) *memCount {
	if c, ok := m.counts.Load(t.ID); ok {
		return c.(*memCount)
	}
	c, loaded := m.counts.LoadOrStore(t.ID, &memCount{expires: t.ExpiresAt})
	if !loaded && m.added.Add(1)%sweepEvery == 0 {
		m.sweep(now)
	}
	return c.(*memCount)
}

// Close gives the unserved rest of every block back to the database in
// one batch, so that request_count is what was served, after waiting for
// reservations under way. Later Consume calls count each request in the
// database as it comes (store.ConsumeToken), so requests still in flight
// stay exact and durable. Call it once the HTTP server has drained, before
// the store closes; ctx bounds the write. If the write fails, the rest is
// lost as in a crash (the tokens serve fewer) and the error says how much.
// Calling Close again gives back nothing more.
func (m *Memory) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	// Every reservation began before closed was set, on a counter stored
	// before then, which Range below therefore visits.
	m.inflight.Wait()
	var back []store.TokenTouch
	var unserved int64
	m.counts.Range(func(id, v any) bool {
		c := v.(*memCount)
		c.mu.Lock()
		if c.left > 0 {
			back = append(back, store.TokenTouch{TokenID: id.(string), Requests: -c.left})
			unserved += c.left
			c.left = 0
		}
		c.mu.Unlock()
		return true
	})
	if err := m.st.TouchTokens(ctx, back); err != nil {
		return fmt.Errorf("give back %d reserved, unserved requests of %d tokens: %w", unserved, len(back), err)
	}
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
