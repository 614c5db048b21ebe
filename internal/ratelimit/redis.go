package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
)

// ErrUnavailable is wrapped by the errors of a Redis limiter that cannot
// decide (Redis slow, away, or its circuit breaker open) and is configured to
// fail closed. The HTTP layer answers 503 with Retry-After.
var ErrUnavailable = errors.New("rate limiter unavailable")

// DefaultRedisTimeout bounds each Redis call of a Redis limiter.
const DefaultRedisTimeout = 50 * time.Millisecond

// RedisOptions configure a Redis limiter. Zero fields take their defaults.
type RedisOptions struct {
	// Prefix is put before every key ("llmproxy:" gives
	// "llmproxy:rl:tok:<id>:rpm"). In Redis Cluster it must contain a hash
	// tag (e.g. "llmproxy:{rl}:") because one decision's keys are read by one
	// script, which needs them in one slot.
	Prefix string
	// Timeout bounds each Redis call (DefaultRedisTimeout).
	Timeout time.Duration
	// FailOpen admits every request while Redis cannot answer; otherwise
	// Allow and Adjust return an error wrapping ErrUnavailable.
	FailOpen bool
	// Breaker guards the Redis calls; nil gives the limiter a breaker of its
	// own with the breaker package defaults. A shared breaker lets every
	// Redis user fail fast together.
	Breaker *breaker.Breaker
	Logger  *slog.Logger // nil discards
}

// RedisStats are a Redis limiter's figures for /metrics.
type RedisStats struct {
	// Errors counts calls that failed (timeouts, connection errors,
	// breaker open).
	Errors int64
	// FailOpen counts decisions admitted without Redis because of
	// FailOpen.
	FailOpen int64
}

// Redis is the cluster-wide Limiter: every bucket lives in Redis and each
// decision runs in an atomic Lua script over all its keys, on the Redis
// server's clock so replicas whose clocks differ agree. Concurrent
// decisions share one script call (one EVALSHA, one round trip): the
// script decides them one after another, exactly as separate calls in
// that order would, reading each key once and writing it once per call —
// so a busy token costs Redis a few commands per batch, not per request.
// A decision made while fewer than maxSending calls are in flight goes at
// once; the others queue, and a waiting caller given the turn sends them
// together (up to maxBatch per call) — no goroutine of its own, no
// hand-over for a lone request.
// Buckets have the semantics of the package doc; they are kept in
// microseconds, so limits above 60,000,000 per minute refill at most one
// unit per microsecond. Each key expires when its bucket would be full
// again, so idle keys cost nothing.
//
// A Redis limiter never blocks a request for longer than Timeout per call,
// and not at all while its breaker is open. Redis is safe for concurrent use.
type Redis struct {
	client   redis.UniversalClient
	prefix   string
	timeout  time.Duration
	failOpen bool
	breaker  *breaker.Breaker
	logger   *slog.Logger
	allow    *redis.Script
	adjust   *redis.Script

	mu      sync.Mutex
	pending map[string]adjustment // Adjust amounts not yet in Redis, by key

	qmu     sync.Mutex
	queue   []*decision   // waiting for a script call, oldest first
	sending int           // callers sending a batch, plus the turns in turn
	turn    chan struct{} // a turn to send, passed on to any waiting caller

	errCount      atomic.Int64
	failOpenCount atomic.Int64
}

var _ Limiter = (*Redis)(nil)

// adjustment is an Adjust amount waiting to be written since since.
type adjustment struct {
	limit, delta int64
	since        time.Time
}

// allowScript decides a batch of requests in order, each as one GCRA
// decision over its buckets, all or nothing, optionally checking and
// incrementing a lifetime counter in the same step. Every decision sees the
// effects of the ones before it; each key is read at most once and written
// at most once per call (its state is carried in Lua tables), at the
// server time of the call.
//
// ARGV[1] is the window in microseconds and ARGV[2] the number of
// decisions. Each decision then has a header of four values — its bucket
// count, the counter's maximum (” for no counter), the seed that creates
// a missing counter (” to report it missing instead) and the counter's TTL
// in milliseconds — followed by each bucket's limit, cost and pending
// adjustment (units added before the decision, applied even when it is
// refused). KEYS are each decision's buckets (a key may repeat: it is
// charged each time), then its counter when it has one, decision after
// decision.
//
// It returns two integers per decision: {0, count} when admitted (count
// is the counter's new value, 0 without a counter), {wait in microseconds,
// 1-based index of the bucket with the longest wait} when a bucket
// refuses, {-1, 0} when the counter is missing and no seed was given,
// {-2, 0} when the counter is at its maximum. Times are integral
// microseconds, which a Lua double holds exactly; they are written with %d
// because Redis would round a plain number to 14 digits.
const allowScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local tat, changed = {}, {}
local cnt, cnew, cttl, cadd = {}, {}, {}, {}
local out = {}
local ki, ai = 1, 3
for d = 1, tonumber(ARGV[2]) do
  local nb, cmax, seed, ttl = tonumber(ARGV[ai]), ARGV[ai + 1], ARGV[ai + 2], ARGV[ai + 3]
  ai = ai + 4
  local base, tats = {}, {}
  local worst, worst_i = 0, 0
  for i = 1, nb do
    local k = KEYS[ki]
    local limit, cost, delta = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
    ki, ai = ki + 1, ai + 3
    local iv = math.max(math.floor(window / limit), 1)
    local v = tats[k]
    if v == nil then
      v = tat[k]
      if v == nil then
        v = tonumber(redis.call('GET', k) or '0')
        tat[k] = v
      end
    end
    if delta ~= 0 then
      v = math.max(v, now) + delta * iv
    end
    if base[k] == nil then
      base[k] = v
    end
    local from = math.max(v, now)
    local new = from + cost * iv
    local wait
    if cost > limit then
      wait = from - now
    else
      wait = math.max(new - limit * iv - now, 0)
    end
    tats[k] = new
    if wait > worst then
      worst, worst_i = wait, i
    end
  end
  local ck, count, created
  if cmax ~= '' then
    ck = KEYS[ki]
    ki = ki + 1
    local c = cnt[ck]
    if c == nil then
      c = redis.call('GET', ck)
      c = c and tonumber(c) or false
      cnt[ck] = c
    end
    if c then
      count = c
    elseif seed == '' then
      worst = -1
    else
      count, created = tonumber(seed), true
    end
    if count and count >= tonumber(cmax) then
      worst = -2
    end
  end
  local keep = tats
  if worst ~= 0 then
    keep = base
  end
  for k, v in pairs(keep) do
    if tat[k] ~= v then
      tat[k], changed[k] = v, true
    end
  end
  if created then
    cnt[ck], cnew[ck], cttl[ck] = count, true, ttl
  end
  if worst == 0 then
    if ck then
      count = count + 1
      cnt[ck] = count
      if not cnew[ck] then
        cadd[ck] = (cadd[ck] or 0) + 1
      end
    end
    out[#out + 1] = 0
    out[#out + 1] = count or 0
  elseif worst < 0 then
    out[#out + 1] = worst
    out[#out + 1] = 0
  else
    out[#out + 1] = worst
    out[#out + 1] = worst_i
  end
end
for k in pairs(changed) do
  local v = tat[k]
  if v > now then
    redis.call('SET', k, string.format('%d', v), 'PX', math.ceil((v - now) / 1000))
  else
    redis.call('DEL', k)
  end
end
for k in pairs(cnew) do
  redis.call('SET', k, string.format('%d', cnt[k]), 'PX', cttl[k])
end
for k, n in pairs(cadd) do
  redis.call('INCRBY', k, n)
end
return out
`

// adjustScript adds ARGV[3] units to the bucket KEYS[1] of limit ARGV[2]
// (window ARGV[1] microseconds), without an admission check.
const adjustScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local iv = math.max(math.floor(tonumber(ARGV[1]) / tonumber(ARGV[2])), 1)
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tonumber(ARGV[3]) * iv
if tat > now then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
else
  redis.call('DEL', KEYS[1])
end
return 0
`

// windowMicros is Window in the scripts' unit.
const windowMicros = int64(Window / time.Microsecond)

// NewRedis returns a limiter on client. It does not contact Redis, so it
// can be built while Redis is unreachable; the caller owns client.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRedisTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Breaker == nil {
		opts.Breaker = breaker.New(breaker.Options{})
	}
	return &Redis{
		client:   client,
		prefix:   opts.Prefix + "rl:",
		timeout:  opts.Timeout,
		failOpen: opts.FailOpen,
		breaker:  opts.Breaker,
		logger:   opts.Logger,
		allow:    redis.NewScript(allowScript),
		adjust:   redis.NewScript(adjustScript),
		pending:  make(map[string]adjustment),
		turn:     make(chan struct{}, maxSending),
	}
}

// Counter is a lifetime counter (a token's max_requests) decided in the same
// atomic step as the rate limits, so a request costs one Redis round trip.
type Counter struct {
	Key string // under the limiter's prefix
	Max int64  // requests are admitted while the count is below Max
	// Seed creates a missing counter with this count; a negative Seed makes
	// AllowCounted report the counter missing (Decision.CounterMissing).
	Seed int64
	TTL  time.Duration // lifetime of a counter created from Seed
}

// Allow implements Limiter with one script call. When Redis cannot answer
// within Timeout (or the breaker is open) it admits if FailOpen, else it
// returns an error wrapping ErrUnavailable.
func (r *Redis) Allow(ctx context.Context, reqs ...Request) (Decision, error) {
	return r.AllowCounted(ctx, nil, reqs...)
}

// AllowCounted is Allow that also checks c (when not nil) in the same
// script: the request is admitted only when every bucket has room and the
// counter is below c.Max, and then the counter is incremented
// (Decision.Count). A counter at its maximum refuses with
// Decision.CounterExceeded; a missing counter with a negative Seed refuses
// with Decision.CounterMissing, and nothing is consumed. Pending Adjust
// amounts of the buckets ride along, so the steady state is at most one
// round trip per request, shared with the decisions made at the same time.
func (r *Redis) AllowCounted(ctx context.Context, c *Counter, reqs ...Request) (Decision, error) {
	var idxBuf [inlineReqs]int
	idx := idxBuf[:0]
	for i, q := range reqs {
		if q.Cost < 0 {
			return Decision{}, fmt.Errorf("allow %s: negative cost %d", q.Key, q.Cost)
		}
		if q.Limit > 0 {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 && c == nil {
		return Decision{Allowed: true}, nil
	}
	d := &decision{done: make(chan struct{})}
	d.keys = make([]string, 0, len(idx)+1)
	d.args = make([]any, 4, 4+3*len(idx))
	d.args[0], d.args[1], d.args[2], d.args[3] = len(idx), "", "", 0
	deltas := make([]int64, len(idx))
	r.mu.Lock()
	for j, i := range idx {
		q := reqs[i]
		a := r.pending[q.Key]
		if a.delta != 0 {
			delete(r.pending, q.Key)
		}
		deltas[j] = a.delta
		d.keys = append(d.keys, r.prefix+q.Key)
		d.args = append(d.args, q.Limit, q.Cost, a.delta)
	}
	r.mu.Unlock()
	if c != nil {
		d.keys = append(d.keys, r.prefix+c.Key)
		d.args[1] = c.Max
		if c.Seed >= 0 {
			d.args[2] = c.Seed
		}
		d.args[3] = max(c.TTL.Milliseconds(), 1)
	}
	err := r.decide(ctx, d)
	if err == nil {
		err = d.err
	}
	if err != nil {
		for j, i := range idx {
			r.pend(reqs[i].Key, reqs[i].Limit, deltas[j])
		}
		if r.failOpen {
			r.failOpenCount.Add(1)
			return Decision{Allowed: true}, nil
		}
		return Decision{}, fmt.Errorf("allow: %w: %w", ErrUnavailable, err)
	}
	switch code, val := d.res[0], d.res[1]; {
	case code == 0:
		return Decision{Allowed: true, Count: val}, nil
	case code == -1:
		return Decision{CounterMissing: true}, nil
	case code == -2:
		return Decision{CounterExceeded: true}, nil
	case code > 0 && val >= 1 && val <= int64(len(idx)):
		return Decision{RetryAfter: roundUp(code * int64(time.Microsecond)), Key: reqs[idx[val-1]].Key}, nil
	}
	return Decision{}, fmt.Errorf("allow: unexpected script reply %v", d.res)
}

// Batching: at most maxSending script calls in flight, each deciding at
// most maxBatch queued decisions. One call in flight makes the batches
// bigger, which Redis feels most (`make bench`, set-up (b), chat c=32 and
// c=128: one in flight against two, 0.12 against 0.20 script calls per
// request, 15–19 against 20–27 µs of Redis CPU per request, the same or
// better throughput); the decisions waiting meanwhile go in the next call.
const (
	maxSending = 1
	maxBatch   = 128
)

// decision is one AllowCounted in the queue.
type decision struct {
	keys []string // its buckets, then its counter
	args []any    // its header and bucket arguments (see allowScript)

	res       [2]int64      // the script's reply
	err       error         // the script call's failure
	done      chan struct{} // closed once res or err is set
	abandoned bool          // the caller gave up waiting; guarded by Redis.qmu
}

// decide queues d and returns once it is decided (d.res or d.err set), or
// with ctx's error when ctx ends first. A caller that finds fewer than
// maxSending calls in flight sends a batch itself; a sender that leaves
// decisions queued passes its turn on through r.turn to any waiting caller,
// so the queue never stalls and no goroutine of its own is needed.
func (r *Redis) decide(ctx context.Context, d *decision) error {
	r.qmu.Lock()
	r.queue = append(r.queue, d)
	send := r.sending < maxSending
	if send {
		r.sending++
	}
	r.qmu.Unlock()
	for {
		if send {
			r.sendBatch(context.WithoutCancel(ctx))
			send = false
		}
		select {
		case <-d.done:
			return nil
		case <-r.turn:
			send = true
		case <-ctx.Done():
			r.qmu.Lock()
			d.abandoned = true
			r.qmu.Unlock()
			return ctx.Err()
		}
	}
}

// sendBatch decides the oldest queued decisions in one script call, wakes
// their callers, and passes the turn to send on when decisions are left,
// or gives it up.
func (r *Redis) sendBatch(ctx context.Context) {
	r.qmu.Lock()
	var batch []*decision
	n := 0
	for _, d := range r.queue {
		n++
		if !d.abandoned {
			batch = append(batch, d)
			if len(batch) == maxBatch {
				break
			}
		}
	}
	r.queue = slices.Delete(r.queue, 0, n)
	r.qmu.Unlock()

	if len(batch) > 0 {
		r.run(ctx, batch)
	}

	r.qmu.Lock()
	defer r.qmu.Unlock()
	live := slices.IndexFunc(r.queue, func(d *decision) bool { return !d.abandoned })
	if live < 0 {
		r.queue = slices.Delete(r.queue, 0, len(r.queue))
		r.sending--
		return
	}
	r.queue = slices.Delete(r.queue, 0, live)
	// Never blocks: the tokens in r.turn plus the callers sending are at
	// most r.sending ≤ maxSending, its capacity.
	r.turn <- struct{}{}
}

// run calls the decision script for batch and wakes every caller in it.
func (r *Redis) run(ctx context.Context, batch []*decision) {
	nk, na := 0, 2
	for _, d := range batch {
		nk += len(d.keys)
		na += len(d.args)
	}
	keys := make([]string, 0, nk)
	args := make([]any, 0, na)
	args = append(args, windowMicros, len(batch))
	for _, d := range batch {
		keys = append(keys, d.keys...)
		args = append(args, d.args...)
	}
	var res []int64
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = r.allow.Run(ctx, r.client, keys, args...).Int64Slice()
		return err
	})
	if err == nil && len(res) != 2*len(batch) {
		err = fmt.Errorf("decision script answered %d values for %d decisions", len(res), len(batch))
	}
	for i, d := range batch {
		if err != nil {
			d.err = err
		} else {
			d.res = [2]int64{res[2*i], res[2*i+1]}
		}
		close(d.done)
	}
}

// Adjust implements Limiter without a round trip of its own: the amount is
// kept in process and applied by this limiter's next decision on the key,
// or by Run's periodic flush, whichever comes first. Other replicas see it
// after that (within FlushInterval).
func (r *Redis) Adjust(_ context.Context, key string, limit int64, delta int64) error {
	if limit > 0 && delta != 0 {
		r.pend(key, limit, delta)
	}
	return nil
}

// pend adds delta to key's pending adjustment.
func (r *Redis) pend(key string, limit, delta int64) {
	if delta == 0 {
		return
	}
	r.mu.Lock()
	a, ok := r.pending[key]
	if !ok {
		a.since = time.Now()
	}
	a.limit, a.delta = limit, a.delta+delta
	r.pending[key] = a
	r.mu.Unlock()
}

// FlushInterval is how often Run writes pending adjustments that no
// decision has carried to Redis in the meantime.
const FlushInterval = 250 * time.Millisecond

// Run writes, every FlushInterval, the pending adjustments older than
// FlushInterval (one pipelined round trip for all of them; under steady
// traffic the next decision on a key carries its adjustment, so there are
// none), until ctx ends, then writes all that are left. Call it once.
func (r *Redis) Run(ctx context.Context) error {
	tick := time.NewTicker(FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			r.Flush(fctx)
			cancel()
			return nil
		case now := <-tick.C:
			r.flush(ctx, now.Add(-FlushInterval))
		}
	}
}

// Flush writes every pending adjustment now, in one pipeline; on failure
// they are kept for the next try.
func (r *Redis) Flush(ctx context.Context) {
	r.flush(ctx, time.Now().Add(time.Hour))
}

// flush writes the pending adjustments made before cutoff.
func (r *Redis) flush(ctx context.Context, cutoff time.Time) {
	r.mu.Lock()
	var batch map[string]adjustment
	for key, a := range r.pending {
		if a.since.Before(cutoff) {
			if batch == nil {
				batch = make(map[string]adjustment)
			}
			batch[key] = a
			delete(r.pending, key)
		}
	}
	r.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := r.call(ctx, func(ctx context.Context) error {
		// A pipeline cannot fall back from EVALSHA to EVAL per command, so
		// a server that does not know the script yet gets it once.
		err := r.adjustBatch(ctx, batch, false)
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = r.adjustBatch(ctx, batch, true)
		}
		return err
	})
	if err != nil {
		for key, a := range batch {
			r.pend(key, a.limit, a.delta)
		}
	}
}

// adjustBatch sends every adjustment of batch in one pipeline, by script
// hash or, with eval, by script text.
func (r *Redis) adjustBatch(ctx context.Context, batch map[string]adjustment, eval bool) error {
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for key, a := range batch {
			keys := []string{r.prefix + key}
			if eval {
				r.adjust.Eval(ctx, p, keys, windowMicros, a.limit, a.delta)
			} else {
				r.adjust.EvalSha(ctx, p, keys, windowMicros, a.limit, a.delta)
			}
		}
		return nil
	})
	return err
}

// call runs fn through the breaker with the per-call timeout and counts its
// failures.
func (r *Redis) call(ctx context.Context, fn func(context.Context) error) error {
	err := r.breaker.Do(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		return fn(ctx)
	})
	if err != nil {
		r.errCount.Add(1)
		if !errors.Is(err, breaker.ErrOpen) {
			r.logger.DebugContext(ctx, "redis rate limiter call failed", "error", err, "fail_open", r.failOpen)
		}
	}
	return err
}

// Healthy reports whether the limiter's breaker is closed (for /readyz).
func (r *Redis) Healthy() bool {
	return !r.breaker.Open()
}

// Stats returns the limiter's counters.
func (r *Redis) Stats() RedisStats {
	return RedisStats{Errors: r.errCount.Load(), FailOpen: r.failOpenCount.Load()}
}
