// Package usage records usage rows, audit events and token touches off the
// request path: callers append to bounded in-memory buffers, and one
// goroutine, owned by Run, writes them to the database in batches (SPEC §4,
// §6.4, §7).
//
// While the database is slow or away, rows are kept (up to
// Options.BufferSize of each kind) and retried with back-off; beyond that,
// new rows are dropped and counted in Stats. Rows recorded before Run's
// context is cancelled are written by its final flush when the database
// answers.
package usage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// Sink is where batches go; store.Store satisfies it. Each call writes its
// whole batch or nothing, and does not keep the slice after returning.
type Sink interface {
	InsertUsage(ctx context.Context, rows []store.Usage) error
	InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error
	TouchTokens(ctx context.Context, touches []store.TokenTouch) error
}

var _ Sink = store.Store(nil)

// Options tune a Recorder. Zero fields take their defaults.
type Options struct {
	BatchSize     int           // rows per insert (default 500)
	FlushInterval time.Duration // max time a row waits while the database answers (default 1s)
	// BufferSize is the most rows held of each kind (usage, audit, distinct
	// touched tokens) while the database is slow or away (default 100000);
	// beyond it new rows are dropped and counted.
	BufferSize int
	// ShutdownTimeout bounds the final flush after Run's context is
	// cancelled (default 10s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger // nil discards
}

// Stats are the recorder's figures for /metrics.
type Stats struct {
	QueuedUsage, QueuedAudit, QueuedTouches    int
	DroppedUsage, DroppedAudit, DroppedTouches int64
	WrittenUsage, WrittenAudit                 int64
	FlushErrors                                int64 // failed sink calls
}

const (
	// writeTimeout bounds one sink call outside shutdown.
	writeTimeout = 10 * time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// Recorder buffers rows and writes them in batches. Its recording methods
// are safe for concurrent use and never block on the database; Run must be
// running for anything to be written.
type Recorder struct {
	sink    Sink
	opts    Options
	log     *slog.Logger
	wake    chan struct{} // a full batch is waiting
	started atomic.Bool

	mu      sync.Mutex
	usage   []store.Usage
	audit   []store.AuditEvent
	touches map[string]store.TokenTouch
	closed  bool // Run has returned: new rows are dropped
	stats   Stats

	// Owned by the Run goroutine: reusable batch buffers.
	usageBatch []store.Usage
	auditBatch []store.AuditEvent
}

// New returns a Recorder writing to s. Start its Run.
func New(s Sink, opts Options) *Recorder {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = 100_000
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Recorder{
		sink:    s,
		opts:    opts,
		log:     opts.Logger,
		wake:    make(chan struct{}, 1),
		touches: make(map[string]store.TokenTouch),
	}
}

// Usage queues one usage row. It never blocks; it fills an empty ID (UUIDv7)
// and a zero CreatedAt (now, UTC). When the buffer is full, or Run has
// returned, the row is dropped and counted.
func (r *Recorder) Usage(u store.Usage) {
	if u.ID == "" {
		u.ID = newID()
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now().UTC()
	}
	r.mu.Lock()
	if r.closed || len(r.usage) >= r.opts.BufferSize {
		r.stats.DroppedUsage++
		r.mu.Unlock()
		return
	}
	r.usage = append(r.usage, u)
	full := len(r.usage)%r.opts.BatchSize == 0
	r.mu.Unlock()
	if full {
		r.signal()
	}
}

// Audit queues one audit event, like Usage.
func (r *Recorder) Audit(e store.AuditEvent) {
	if e.ID == "" {
		e.ID = newID()
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = time.Now().UTC()
	}
	r.mu.Lock()
	if r.closed || len(r.audit) >= r.opts.BufferSize {
		r.stats.DroppedAudit++
		r.mu.Unlock()
		return
	}
	r.audit = append(r.audit, e)
	full := len(r.audit)%r.opts.BatchSize == 0
	r.mu.Unlock()
	if full {
		r.signal()
	}
}

// Touch counts one request of tokenID used at at (zero: now). Touches of a
// token are summed into one store.TokenTouch per flush. It never blocks; a
// token beyond BufferSize distinct ones, or after Run has returned, is
// dropped and counted.
func (r *Recorder) Touch(tokenID string, at time.Time) { r.touch(tokenID, 1, at) }

// TouchLastUsed moves tokenID's last_used_at forward to at (zero: now)
// without counting a request: for requests a quota counter has already
// added to request_count (quota.Memory reserves them ahead). It batches,
// never blocks and drops like Touch.
func (r *Recorder) TouchLastUsed(tokenID string, at time.Time) { r.touch(tokenID, 0, at) }

func (r *Recorder) touch(tokenID string, requests int64, at time.Time) {
	if at.IsZero() {
		at = time.Now()
	}
	at = at.UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.touches[tokenID]
	if r.closed || (!ok && len(r.touches) >= r.opts.BufferSize) {
		r.stats.DroppedTouches++
		return
	}
	r.touches[tokenID] = merge(t, store.TokenTouch{TokenID: tokenID, Requests: requests, LastUsedAt: at})
}

// Stats returns the current figures.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.QueuedUsage, s.QueuedAudit, s.QueuedTouches = len(r.usage), len(r.audit), len(r.touches)
	return s
}

// Run owns the flushing goroutine and returns when ctx is cancelled. It
// writes a batch as soon as one is full and everything queued every
// FlushInterval. On sink errors it keeps the rows and retries with
// exponential back-off, logging once per outage. When ctx is cancelled it
// flushes everything still queued within ShutdownTimeout (a context of its
// own, not ctx) and returns nil, or an error saying how much was not
// written. Call it exactly once.
func (r *Recorder) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("usage recorder: Run called twice")
	}
	tick := time.NewTicker(r.opts.FlushInterval)
	defer tick.Stop()
	var (
		retry   <-chan time.Time // non-nil while backing off
		backoff time.Duration
		out     outage
	)
	for {
		all := true
		select {
		case <-ctx.Done():
			return r.final(ctx, &out)
		case <-retry:
		case <-tick.C:
			if retry != nil {
				continue
			}
		case <-r.wake:
			if retry != nil {
				continue
			}
			all = false
		}
		err := r.flush(context.WithoutCancel(ctx), all, writeTimeout)
		out.observe(r, err)
		if err == nil {
			retry, backoff = nil, 0
			continue
		}
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		retry = time.After(backoff)
	}
}

// final flushes everything within ShutdownTimeout, retrying with back-off,
// then closes the recorder to new rows.
func (r *Recorder) final(ctx context.Context, out *outage) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.ShutdownTimeout)
	defer cancel()
	backoff := minBackoff
	for {
		err := r.flush(fctx, true, r.opts.ShutdownTimeout)
		out.observe(r, err)
		if err == nil {
			r.mu.Lock()
			if len(r.usage) == 0 && len(r.audit) == 0 && len(r.touches) == 0 {
				r.closed = true
				r.mu.Unlock()
				return nil
			}
			r.mu.Unlock()
			if err = fctx.Err(); err == nil {
				continue // more rows arrived meanwhile
			}
		}
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, maxBackoff)
		case <-fctx.Done():
			r.mu.Lock()
			r.closed = true
			s := r.stats
			s.QueuedUsage, s.QueuedAudit, s.QueuedTouches = len(r.usage), len(r.audit), len(r.touches)
			r.mu.Unlock()
			return fmt.Errorf("final usage flush: %d usage rows, %d audit events, %d token touches not written: %w",
				s.QueuedUsage, s.QueuedAudit, s.QueuedTouches, err)
		}
	}
}

// flush writes what is queued now: every full batch, and with all also the
// partial batches and the touches. It stops at the first sink error, leaving
// the unwritten rows queued. Each sink call gets at most timeout.
func (r *Recorder) flush(ctx context.Context, all bool, timeout time.Duration) error {
	r.mu.Lock()
	nu, na := len(r.usage), len(r.audit)
	r.mu.Unlock()
	size := r.opts.BatchSize
	for left := nu; left >= size || (all && left > 0); left -= size {
		n := min(left, size)
		r.mu.Lock()
		r.usageBatch = append(r.usageBatch[:0], r.usage[:n]...)
		r.mu.Unlock()
		if err := r.write(ctx, timeout, func(ctx context.Context) error {
			return insert(ctx, r.usageBatch, r.sink.InsertUsage)
		}); err != nil {
			return fmt.Errorf("insert usage: %w", err)
		}
		r.mu.Lock()
		r.usage = dropFront(r.usage, n)
		r.stats.WrittenUsage += int64(n)
		r.mu.Unlock()
	}
	for left := na; left >= size || (all && left > 0); left -= size {
		n := min(left, size)
		r.mu.Lock()
		r.auditBatch = append(r.auditBatch[:0], r.audit[:n]...)
		r.mu.Unlock()
		if err := r.write(ctx, timeout, func(ctx context.Context) error {
			return insert(ctx, r.auditBatch, r.sink.InsertAuditEvents)
		}); err != nil {
			return fmt.Errorf("insert audit events: %w", err)
		}
		r.mu.Lock()
		r.audit = dropFront(r.audit, n)
		r.stats.WrittenAudit += int64(n)
		r.mu.Unlock()
	}
	if all {
		return r.flushTouches(ctx, timeout)
	}
	return nil
}

// dropFront removes the first n elements of s in place, keeping its
// backing array (re-slicing from the front would abandon it and make every
// later append reallocate).
func dropFront[T any](s []T, n int) []T {
	rest := copy(s, s[n:])
	clear(s[rest:])
	return s[:rest]
}

// flushTouches writes the aggregated touches in token ID order; on failure
// they are merged back into whatever arrived meanwhile.
func (r *Recorder) flushTouches(ctx context.Context, timeout time.Duration) error {
	r.mu.Lock()
	pending := r.touches
	if len(pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	r.touches = make(map[string]store.TokenTouch, len(pending))
	r.mu.Unlock()
	touches := make([]store.TokenTouch, 0, len(pending))
	for _, t := range pending {
		touches = append(touches, t)
	}
	slices.SortFunc(touches, func(a, b store.TokenTouch) int { return cmp.Compare(a.TokenID, b.TokenID) })
	err := r.write(ctx, timeout, func(ctx context.Context) error { return r.sink.TouchTokens(ctx, touches) })
	if err != nil {
		r.mu.Lock()
		for _, t := range touches {
			r.touches[t.TokenID] = merge(r.touches[t.TokenID], t)
		}
		r.mu.Unlock()
		return fmt.Errorf("touch tokens: %w", err)
	}
	return nil
}

// write runs one sink call with its own timeout and counts its failure.
func (r *Recorder) write(ctx context.Context, timeout time.Duration, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := call(ctx)
	if err != nil {
		r.mu.Lock()
		r.stats.FlushErrors++
		r.mu.Unlock()
	}
	return err
}

// insert writes a batch with write. A store.ErrConflict means some rows are
// already stored (an earlier attempt committed but reported an error, or a
// caller reused an ID), so the rows are written one by one and those
// duplicates skipped; otherwise one such row would block the buffer forever.
func insert[T any](ctx context.Context, rows []T, write func(context.Context, []T) error) error {
	err := write(ctx, rows)
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	for i := range rows {
		if err := write(ctx, rows[i:i+1]); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return nil
}

func (r *Recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// outage turns flush results into few log lines: one when writes start
// failing, one when they recover, and one when rows start being dropped.
// It is owned by the Run goroutine.
type outage struct {
	since       time.Time // zero: the sink answers
	droppedSeen int64
	dropping    bool // rows were dropped since the previous flush
}

func (o *outage) observe(r *Recorder, err error) {
	s := r.Stats()
	switch {
	case err != nil && o.since.IsZero():
		o.since = time.Now()
		r.log.Warn("usage sink failing; keeping rows and retrying",
			"error", err, "queued_usage", s.QueuedUsage, "queued_audit", s.QueuedAudit)
	case err == nil && !o.since.IsZero():
		r.log.Info("usage sink recovered",
			"outage", time.Since(o.since).Round(time.Millisecond), "flush_errors", s.FlushErrors,
			"dropped_usage", s.DroppedUsage, "dropped_audit", s.DroppedAudit)
		o.since = time.Time{}
	}
	dropped := s.DroppedUsage + s.DroppedAudit + s.DroppedTouches
	if dropped > o.droppedSeen && !o.dropping {
		r.log.Warn("usage buffer full; dropping rows",
			"dropped_usage", s.DroppedUsage, "dropped_audit", s.DroppedAudit, "dropped_touches", s.DroppedTouches)
	}
	o.dropping = dropped > o.droppedSeen
	o.droppedSeen = dropped
}

// merge adds b's requests to a and keeps the later last use.
func merge(a, b store.TokenTouch) store.TokenTouch {
	a.TokenID = b.TokenID
	a.Requests += b.Requests
	if b.LastUsedAt.After(a.LastUsedAt) {
		a.LastUsedAt = b.LastUsedAt
	}
	return a
}

// newID returns a UUIDv7 (time-ordered, so inserts append to the index).
func newID() string {
	return uuid.Must(uuid.NewV7()).String()
}
