package auth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Defaults of FailureOptions.
const (
	DefaultFailureLimit     = 20
	DefaultFailureKeyPrefix = "llmproxy:authfail:"
	DefaultFailureTimeout   = 50 * time.Millisecond
	DefaultMaxTracked       = 100_000
	DefaultMaxAudited       = 1000
	DefaultBlockRefresh     = 5 * time.Second
)

const (
	// failureWindow is the fixed window failures are counted in. Windows
	// are aligned on whole minutes of Unix time, so replicas agree on them
	// up to their clock skew.
	failureWindow = time.Minute
	// blockBatch bounds the blocks one store write carries.
	blockBatch = 500
	// storeTimeout bounds each store call of Run, and its final write.
	storeTimeout = 5 * time.Second
	// Bounds of the audited fields the HTTP layer does not bound itself.
	maxClientLen    = 64
	maxMethodLen    = 16
	maxRequestIDLen = 128
)

// Default audit fields of a failed authentication, as the HTTP layer wrote
// them before failures were aggregated, so existing queries keep finding
// them.
const (
	auditActor  = "client"
	auditAction = "proxy.auth"
)

// Failure is one failed authentication as the HTTP layer saw it. Strings
// may be arbitrarily long or malformed: the limiter bounds what it keeps.
type Failure struct {
	IP        string // the client address, resolved through TRUSTED_PROXIES
	Method    string
	Path      string
	Reason    string
	RequestID string
	TokenID   string // set when a known token was refused (DeniedError)
	ProjectID string
	// Actor and Action are the audit event's; empty means "client" and
	// "proxy.auth". A summary row takes those of the window's first
	// failure.
	Actor, Action string
}

// Auditor receives audit events; *usage.Recorder satisfies it. Audit must
// not block: it is called on the request path.
type Auditor interface {
	Audit(store.AuditEvent)
}

// BlockStore persists blocks; store.Store satisfies it.
type BlockStore interface {
	RecordAuthBlocks(ctx context.Context, blocks []store.AuthBlock) error
	ActiveAuthBlocks(ctx context.Context, now time.Time, limit int) ([]store.AuthBlock, error)
}

var _ BlockStore = store.Store(nil)

// FailureOptions tune a FailureLimiter. Zero fields take the defaults.
type FailureOptions struct {
	// Limit is how many failed authentications a client may make in a
	// window (AUTH_FAILURE_LIMIT, default 20): the Limit-th blocks it until
	// the window ends.
	Limit int
	// Redis, when set, holds the counts, so replicas sharing it count each
	// client once between them. Its client should have
	// ContextTimeoutEnabled, so RedisTimeout bounds the socket wait. nil:
	// each replica counts in process.
	Redis *redis.Client
	// KeyPrefix prefixes the Redis keys (default "llmproxy:authfail:"); a
	// key is prefix + client + ":" + window number.
	KeyPrefix string
	// RedisTimeout bounds each Redis call (default 50ms).
	RedisTimeout time.Duration
	// Breaker guards the Redis calls; a breaker shared with the other Redis
	// users lets them fail fast together. nil: a breaker of its own, which
	// logs its transitions.
	Breaker *breaker.Breaker
	// MaxTracked bounds the clients counted in process per window, and the
	// blocks held (default 100000), so spraying addresses cannot grow
	// memory without bound.
	MaxTracked int
	// MaxAudited bounds the clients audited row by row per window (default
	// 1000); the failures of further clients share one summary row.
	MaxAudited int
	// RefreshInterval is how often Run reloads the active blocks from the
	// store (default 5s).
	RefreshInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives Redis and store outages (default: discard).
	Logger *slog.Logger
}

// FailureLimiter limits and audits failed authentications per client
// (SPEC §6.1). A client is an IP address, except that IPv6 addresses count
// by their /64 prefix: one host or site is given a whole /64 and could
// otherwise rotate through it.
//
// Counting: failures are counted per client in fixed one-minute windows, in
// Redis when configured (one pipelined INCR+EXPIRE per failure), else in
// process; the in-process count is kept either way and stands in while
// Redis fails. The Limit-th failure in a window blocks the client until the
// window ends. The block is written once to the store (auth_rate_limits) by
// Run, off the request path: with Redis, by the replica whose failure
// reached the limit; without, by each replica that reached it. Other
// replicas and restarted processes load active blocks from the store.
//
// Auditing: a client's first failure in a window is audited at once; its
// further failures become one summary row when the window ends (or when Run
// stops). Every row carries Metadata "count" (the failures it stands for,
// so the counts of a window add up), "window_start" and "window_end"
// (RFC 3339); summary rows carry "summary": true, the method, path and
// reason of the client's first failure, and "blocked": true when the client
// was blocked. Past MaxAudited clients in a window, failures of new clients
// go to one summary row with "other_clients": true and no client IP.
//
// Concurrency: all methods are safe for concurrent use. Blocked costs one
// atomic load while nobody is blocked, else a read lock and a map lookup;
// Fail takes short locks and, with Redis, makes one bounded round trip. The
// database is touched only by Run's goroutine.
type FailureLimiter struct {
	st         BlockStore
	audit      Auditor
	rdb        *redis.Client
	brk        *breaker.Breaker
	prefix     string
	timeout    time.Duration
	limit      int64
	maxTracked int
	maxAudited int
	refresh    time.Duration
	now        func() time.Time
	log        *slog.Logger
	started    atomic.Bool
	wake       chan struct{} // blocks are pending

	mu      sync.Mutex // guards the fields below; taken before bmu
	window  int64      // the current window number
	counts  map[string]int64
	agg     map[string]*aggregate
	other   aggregate // failures of clients past MaxAudited
	pending []store.AuthBlock

	bmu      sync.RWMutex
	blocked  map[string]time.Time // client → end of its block
	nblocked atomic.Int64         // len(blocked)

	// Owned by Run's goroutine.
	storeDown bool
}

// aggregate is a client's failures in the current window.
type aggregate struct {
	first Failure // bounded
	count int64
}

// FailureStats are the limiter's figures for /metrics.
type FailureStats struct {
	Tracked       int // clients counted in process in the current window (≤ MaxTracked)
	Audited       int // clients audited row by row in the current window (≤ MaxAudited)
	Blocked       int // blocks held, expired ones until the next window (≤ MaxTracked)
	PendingBlocks int // blocks not yet written to the store
}

// NewFailureLimiter returns a limiter that persists blocks in st and
// audits through audit. Start its Run.
func NewFailureLimiter(st BlockStore, audit Auditor, opts FailureOptions) *FailureLimiter {
	if opts.Limit <= 0 {
		opts.Limit = DefaultFailureLimit
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultFailureKeyPrefix
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = DefaultFailureTimeout
	}
	if opts.MaxTracked <= 0 {
		opts.MaxTracked = DefaultMaxTracked
	}
	if opts.MaxAudited <= 0 {
		opts.MaxAudited = DefaultMaxAudited
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultBlockRefresh
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &FailureLimiter{
		st:         st,
		audit:      audit,
		rdb:        opts.Redis,
		prefix:     opts.KeyPrefix,
		timeout:    opts.RedisTimeout,
		limit:      int64(opts.Limit),
		maxTracked: opts.MaxTracked,
		maxAudited: opts.MaxAudited,
		refresh:    opts.RefreshInterval,
		now:        opts.Now,
		log:        opts.Logger,
		wake:       make(chan struct{}, 1),
		counts:     make(map[string]int64),
		agg:        make(map[string]*aggregate),
		blocked:    make(map[string]time.Time),
	}
	// While Redis is away, failing fast keeps each failed authentication
	// from waiting out RedisTimeout.
	if l.brk = opts.Breaker; l.brk == nil {
		l.brk = breaker.New(breaker.Options{
			Now: opts.Now,
			OnStateChange: func(open bool) {
				if open {
					l.log.Warn("redis unavailable: counting failed authentications in process")
				} else {
					l.log.Info("redis back: counting failed authentications in redis")
				}
			},
		})
	}
	return l
}

// Blocked reports whether the client at ip is blocked, and for how much
// longer (always > 0 when blocked). It does no I/O: it reads the blocks
// held in process, which Fail adds and Run loads from the store.
func (l *FailureLimiter) Blocked(ip string) (retryAfter time.Duration, blocked bool) {
	if l.nblocked.Load() == 0 {
		return 0, false
	}
	now := l.now()
	until, ok := l.blockedUntil(ClientKey(ip), now)
	if !ok {
		return 0, false
	}
	return until.Sub(now), true
}

// Fail records one failed authentication. It audits the client's first
// failure of the window at once and aggregates the others; it counts the
// failure and blocks the client when the count reaches Limit. A client
// already blocked is only aggregated, without I/O. With Redis, the count
// costs one round trip bounded by RedisTimeout and a circuit breaker, and
// is made even if ctx is cancelled (a client that hangs up is still
// counted); when Redis fails, the in-process count decides. The first
// failure of a window also emits the summary rows of the window before, if
// Run has not yet (at most MaxAudited+1 calls of the Auditor). Fail never
// touches the database.
func (l *FailureLimiter) Fail(ctx context.Context, f Failure) {
	now := l.now()
	w := windowOf(now)
	key := ClientKey(f.IP)
	l.mu.Lock()
	ended := l.rollLocked(w, now)
	n := l.countLocked(key)
	first := l.aggregateLocked(key, f, now)
	l.mu.Unlock()
	l.emit(ended)
	if first != nil {
		l.audit.Audit(*first)
	}

	if _, ok := l.blockedUntil(key, now); ok {
		return
	}
	// counted is whether this replica's failure is known to be the one
	// that reached the limit cluster-wide; without a Redis answer, every
	// replica that reaches it writes the block (the upsert merges them).
	counted := false
	if l.rdb != nil {
		if rn, err := l.incr(ctx, key, now); err == nil {
			n, counted = rn, true
		}
	}
	if n < l.limit {
		return
	}
	until := windowStart(w + 1)
	if l.block(key, until) && (!counted || n == l.limit) {
		l.persist(store.AuthBlock{Identifier: key, FailedAttempts: int(min(n, math.MaxInt32)),
			LastAttemptAt: now, BlockedUntil: until})
	}
}

// Stats returns the current figures.
func (l *FailureLimiter) Stats() FailureStats {
	l.mu.Lock()
	s := FailureStats{Tracked: len(l.counts), Audited: len(l.agg), PendingBlocks: len(l.pending)}
	l.mu.Unlock()
	s.Blocked = int(l.nblocked.Load())
	return s
}

// Run owns the limiter's background work and returns when ctx ends. It
// loads the active blocks from the store at once and every
// RefreshInterval; writes new blocks as Fail makes them, keeping and
// retrying them while the store fails (until they expire); and at each
// window's end emits the window's summary rows and forgets expired blocks.
// When ctx ends it emits the summaries of the current window so far and
// writes the blocks not yet written, within a timeout of its own, and
// returns an error only if blocks could not be written. Failures after Run
// returned are still counted and blocked, but their summaries are not
// written, so stop Run after the HTTP server and before the Auditor. Call
// it once.
func (l *FailureLimiter) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return errors.New("failure limiter: Run called twice")
	}
	l.loadBlocks(ctx)
	refresh := time.NewTicker(l.refresh)
	defer refresh.Stop()
	roll := time.NewTimer(untilNextWindow(l.now()))
	defer roll.Stop()
	for {
		select {
		case <-ctx.Done():
			return l.final(ctx)
		case <-roll.C:
			now := l.now()
			l.mu.Lock()
			ended := l.rollLocked(windowOf(now), now)
			l.mu.Unlock()
			l.emit(ended)
			l.pruneBlocks(now)
			roll.Reset(untilNextWindow(l.now()))
		case <-refresh.C:
			l.loadBlocks(ctx)
			_ = l.writeBlocks(ctx) // retries what an earlier write left
		case <-l.wake:
			_ = l.writeBlocks(ctx)
		}
	}
}

// final emits the current window's summaries so far and writes the
// pending blocks.
func (l *FailureLimiter) final(ctx context.Context) error {
	now := l.now()
	l.mu.Lock()
	rows := l.summariesLocked(now)
	l.agg, l.other = make(map[string]*aggregate), aggregate{}
	l.mu.Unlock()
	l.emit(rows)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := l.writeBlocks(ctx); err != nil {
		return fmt.Errorf("failure limiter: write blocks: %w", err)
	}
	return nil
}

// incr counts one failure of key in the window of now in Redis and returns
// the count.
func (l *FailureLimiter) incr(ctx context.Context, key string, now time.Time) (int64, error) {
	w := windowOf(now)
	k := l.prefix + key + ":" + strconv.FormatInt(w, 10)
	// Relative to this replica's clock, not Redis's; one window past the
	// end, so replicas whose clocks lag still find the count.
	ttl := windowStart(w + 2).Sub(now)
	var n *redis.IntCmd
	err := l.brk.Do(context.WithoutCancel(ctx), func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, l.timeout)
		defer cancel()
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			n = p.Incr(ctx, k)
			p.Expire(ctx, k, ttl)
			return nil
		})
		return err
	})
	if err != nil {
		return 0, err
	}
	return n.Val(), nil
}

// rollLocked moves the state to window w. When that ends the current
// window, it returns the window's summary rows, to be emitted after
// unlocking. A clock that steps back stays in the later window.
func (l *FailureLimiter) rollLocked(w int64, now time.Time) []store.AuditEvent {
	if w <= l.window {
		return nil
	}
	rows := l.summariesLocked(now)
	l.window = w
	// New maps rather than clear(): memory taken during an attack is
	// given back.
	l.counts = make(map[string]int64)
	l.agg = make(map[string]*aggregate)
	l.other = aggregate{}
	return rows
}

// countLocked counts one failure of key in process and returns its count.
func (l *FailureLimiter) countLocked(key string) int64 {
	n, ok := l.counts[key]
	if !ok && len(l.counts) >= l.maxTracked {
		l.evictCountLocked()
	}
	n++
	l.counts[key] = n
	return n
}

// evictCountLocked forgets the client with the fewest failures among a
// sample (map iteration order), so a spray of one-off addresses pushes out
// its own kind rather than a client close to the limit.
func (l *FailureLimiter) evictCountLocked() {
	var (
		victim string
		least  int64
		i      int
	)
	for k, n := range l.counts {
		if i == 0 || n < least {
			victim, least = k, n
		}
		if i++; i == evictSample || least == 1 {
			break
		}
	}
	delete(l.counts, victim)
}

// aggregateLocked adds f to its client's aggregate and returns the audit
// row of the client's first failure in the window, or nil.
func (l *FailureLimiter) aggregateLocked(key string, f Failure, now time.Time) *store.AuditEvent {
	if a := l.agg[key]; a != nil {
		a.count++
		return nil
	}
	if len(l.agg) >= l.maxAudited {
		if l.other.count == 0 {
			l.other.first = bounded(f)
		}
		l.other.count++
		return nil
	}
	a := &aggregate{first: bounded(f), count: 1}
	l.agg[key] = a
	e := l.event(a.first, now, 1, false)
	return &e
}

// summariesLocked returns the summary rows of the current window, in
// client order.
func (l *FailureLimiter) summariesLocked(now time.Time) []store.AuditEvent {
	var rows []store.AuditEvent
	keys := make([]string, 0, len(l.agg))
	for k, a := range l.agg {
		if a.count > 1 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	start := windowStart(l.window)
	l.bmu.RLock()
	for _, k := range keys {
		a := l.agg[k]
		e := l.event(a.first, now, a.count-1, true)
		if until, ok := l.blocked[k]; ok && until.After(start) {
			e.Metadata["blocked"] = true
		}
		rows = append(rows, e)
	}
	l.bmu.RUnlock()
	if l.other.count > 0 {
		e := l.event(l.other.first, now, l.other.count, true)
		e.ClientIP = ""
		e.Metadata["other_clients"] = true
		rows = append(rows, e)
	}
	return rows
}

// event is the audit row of count failures of the current window, with
// the details of f.
func (l *FailureLimiter) event(f Failure, at time.Time, count int64, summary bool) store.AuditEvent {
	meta := map[string]any{
		"count":        count,
		"window_start": windowStart(l.window).Format(time.RFC3339),
		"window_end":   windowStart(l.window + 1).Format(time.RFC3339),
	}
	e := store.AuditEvent{
		CreatedAt: at,
		Actor:     cmp.Or(f.Actor, auditActor),
		Action:    cmp.Or(f.Action, auditAction),
		Outcome:   store.OutcomeDenied,
		ProjectID: f.ProjectID,
		TokenID:   f.TokenID,
		ClientIP:  f.IP,
		Method:    f.Method,
		Path:      f.Path,
		Reason:    f.Reason,
		Metadata:  meta,
	}
	if summary {
		meta["summary"] = true
	} else {
		e.RequestID = f.RequestID
	}
	return e
}

func (l *FailureLimiter) emit(rows []store.AuditEvent) {
	for _, e := range rows {
		l.audit.Audit(e)
	}
}

func (l *FailureLimiter) blockedUntil(key string, now time.Time) (time.Time, bool) {
	l.bmu.RLock()
	until, ok := l.blocked[key]
	l.bmu.RUnlock()
	return until, ok && until.After(now)
}

// block blocks key until until and reports whether that is news here. Past
// MaxTracked blocks, new ones are not held until expired ones are pruned.
func (l *FailureLimiter) block(key string, until time.Time) bool {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	cur, ok := l.blocked[key]
	if ok && !cur.Before(until) || !ok && len(l.blocked) >= l.maxTracked {
		return false
	}
	l.blocked[key] = until
	l.nblocked.Store(int64(len(l.blocked)))
	return true
}

// pruneBlocks forgets the blocks that ended by now.
func (l *FailureLimiter) pruneBlocks(now time.Time) {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	live := make(map[string]time.Time)
	for k, until := range l.blocked {
		if until.After(now) {
			live[k] = until
		}
	}
	l.blocked = live
	l.nblocked.Store(int64(len(live)))
}

// persist queues b for Run to write. Past MaxTracked pending blocks, b is
// dropped: it still holds in this process.
func (l *FailureLimiter) persist(b store.AuthBlock) {
	l.mu.Lock()
	if len(l.pending) < l.maxTracked {
		l.pending = append(l.pending, b)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// loadBlocks adds the store's active blocks to those held.
func (l *FailureLimiter) loadBlocks(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	blocks, err := l.st.ActiveAuthBlocks(ctx, l.now(), l.maxTracked)
	l.observe(err)
	for _, b := range blocks {
		l.block(b.Identifier, b.BlockedUntil)
	}
}

// writeBlocks writes the pending blocks that have not expired, in batches.
// On an error it keeps the unwritten ones for the next call. Only Run's
// goroutine calls it, so the pending blocks it takes cannot be written
// twice.
func (l *FailureLimiter) writeBlocks(ctx context.Context) error {
	l.mu.Lock()
	todo := l.pending
	l.pending = nil
	l.mu.Unlock()
	now := l.now()
	todo = slices.DeleteFunc(todo, func(b store.AuthBlock) bool { return !b.BlockedUntil.After(now) })
	for len(todo) > 0 {
		n := min(len(todo), blockBatch)
		wctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err := l.st.RecordAuthBlocks(wctx, todo[:n])
		cancel()
		l.observe(err)
		if err != nil {
			l.mu.Lock()
			l.pending = append(todo, l.pending...)
			if len(l.pending) > l.maxTracked {
				l.pending = l.pending[:l.maxTracked]
			}
			l.mu.Unlock()
			return err
		}
		todo = todo[n:]
	}
	return nil
}

// observe logs the start and the end of a store outage, once each.
func (l *FailureLimiter) observe(err error) {
	switch {
	case err != nil && !l.storeDown:
		l.storeDown = true
		l.log.Warn("auth blocks: store unavailable, blocks held in process only", "error", err)
	case err == nil && l.storeDown:
		l.storeDown = false
		l.log.Info("auth blocks: store back")
	}
}

// bounded returns f with every field bounded for the audit trail.
func bounded(f Failure) Failure {
	return Failure{
		IP:        Bound(f.IP, maxClientLen),
		Method:    Bound(f.Method, maxMethodLen),
		Path:      Bound(f.Path, MaxAuditPath),
		Reason:    Bound(f.Reason, MaxAuditReason),
		RequestID: Bound(f.RequestID, maxRequestIDLen),
		TokenID:   f.TokenID,
		ProjectID: f.ProjectID,
		Actor:     f.Actor,
		Action:    f.Action,
	}
}

// ClientKey names the client a failure counts against: its address in
// canonical form (IPv4-mapped IPv6 as IPv4, no zone), an IPv6 address by
// its /64 prefix. What does not parse as an address is bounded and counted
// as it is.
func ClientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return Bound(ip, maxClientLen)
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

// windowOf returns the number of the window t falls in.
func windowOf(t time.Time) int64 {
	return t.Unix() / int64(failureWindow/time.Second)
}

// windowStart returns when window w starts (and w-1 ends).
func windowStart(w int64) time.Time {
	return time.Unix(w*int64(failureWindow/time.Second), 0).UTC()
}

func untilNextWindow(now time.Time) time.Duration {
	return windowStart(windowOf(now) + 1).Sub(now)
}
