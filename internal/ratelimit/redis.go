package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Scripter runs the per-request decision script while more than
	// DirectDecisions decisions are in flight; nil means the client itself.
	// An autopipeliner (NewPipeliner) batches the decisions of concurrent
	// requests into pipelines: still one command per request, but one write
	// and one read for many of them.
	Scripter redis.Scripter
	// DirectDecisions is how many concurrent decisions go straight to the
	// client before Scripter takes over: a lone request gains nothing from
	// batching and would pay the hand-over to the pipeliner's goroutine.
	DirectDecisions int
	Logger          *slog.Logger // nil discards
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
// Allow is one atomic Lua script (one round trip, EVALSHA) over all its
// keys, on the Redis server's clock so replicas whose clocks differ agree.
// Buckets have the semantics of the package doc; they are kept in
// microseconds, so limits above 60,000,000 per minute refill at most one
// unit per microsecond. Each key expires when its bucket would be full
// again, so idle keys cost nothing.
//
// A Redis limiter never blocks a request for longer than Timeout per call,
// and not at all while its breaker is open. Redis is safe for concurrent use.
type Redis struct {
	client   redis.UniversalClient
	scripter redis.Scripter // runs the decision script under concurrency
	direct   int64          // decisions in flight that still go to client
	inflight atomic.Int64   // decisions in flight
	prefix   string
	timeout  time.Duration
	failOpen bool
	breaker  *breaker.Breaker
	logger   *slog.Logger
	allow    *redis.Script
	adjust   *redis.Script

	mu      sync.Mutex
	pending map[string]adjustment // Adjust amounts not yet in Redis, by key

	errCount      atomic.Int64
	failOpenCount atomic.Int64
}

var _ Limiter = (*Redis)(nil)

// adjustment is an Adjust amount waiting to be written since since.
type adjustment struct {
	limit, delta int64
	since        time.Time
}

// allowScript applies a GCRA decision to every bucket, all or nothing,
// and optionally checks and increments a lifetime counter in the same step.
//
// KEYS are the buckets (a key may repeat: it is charged each time), then the
// counter when there is one. ARGV[1] is the window in microseconds; ARGV[2]
// the counter's maximum (” for no counter), ARGV[3] the seed that creates a
// missing counter (” to report it missing instead) and ARGV[4] its TTL in
// milliseconds; then each bucket's limit, cost and pending adjustment (units
// added before the decision, applied even when the request is refused).
//
// It returns {0, count} when admitted (count is the counter's new value, 0
// without a counter), {wait in microseconds, 1-based index of the bucket with
// the longest wait} when a bucket refuses, {-1} when the counter is missing
// and no seed was given, {-2} when the counter is at its maximum. Times are
// integral microseconds, which a Lua double holds exactly; they are written
// with %d because Redis would round a plain number to 14 digits.
const allowScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local nb = #KEYS
local ckey
if ARGV[2] ~= '' then
  ckey = KEYS[nb]
  nb = nb - 1
end
local function put(k, tat)
  if tat > now then
    redis.call('SET', k, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  else
    redis.call('DEL', k)
  end
end
local base, tats = {}, {}
local worst, worst_i = 0, 0
for i = 1, nb do
  local k = KEYS[i]
  local a = 3 * i + 2
  local limit, cost, delta = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local iv = math.max(math.floor(window / limit), 1)
  local tat = tats[k]
  if tat == nil then
    tat = tonumber(redis.call('GET', k) or '0')
  end
  if delta ~= 0 then
    tat = math.max(tat, now) + delta * iv
  end
  if base[k] == nil then
    base[k] = tat
  end
  local from = math.max(tat, now)
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
local count, created
if ckey then
  count = redis.call('GET', ckey)
  if not count then
    if ARGV[3] == '' then
      worst = -1
    else
      count, created = ARGV[3], true
    end
  end
  if count then
    count = tonumber(count)
    if count >= tonumber(ARGV[2]) then
      worst = -2
    end
  end
end
if worst ~= 0 then
  for k, tat in pairs(base) do
    put(k, tat)
  end
  if created then
    redis.call('SET', ckey, string.format('%d', count), 'PX', ARGV[4])
  end
  if worst < 0 then
    return {worst}
  end
  return {worst, worst_i}
end
for k, tat in pairs(tats) do
  put(k, tat)
end
if ckey then
  if created then
    count = count + 1
    redis.call('SET', ckey, string.format('%d', count), 'PX', ARGV[4])
  else
    count = redis.call('INCR', ckey)
  end
end
return {0, count or 0}
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

// NewPipeliner returns client's autopipeliner set up for decisions (see
// RedisOptions.Scripter): unordered, since each decision is an independent
// atomic script and each caller waits for its own reply, with two batches
// in flight so that a batch's round trip does not hold up the next one.
// Closing the client closes it.
func NewPipeliner(client *redis.Client) (*redis.AutoPipeliner, error) {
	return client.AutoPipelineWithOptions(&redis.AutoPipelineOptions{
		MaxBatchSize: 300, MaxBatchBytes: 128 << 10, MaxConcurrentBatches: 2, Unordered: true,
	})
}

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
	if opts.Scripter == nil {
		opts.Scripter = client
	}
	return &Redis{
		client:   client,
		scripter: opts.Scripter,
		direct:   int64(opts.DirectDecisions),
		prefix:   opts.Prefix + "rl:",
		timeout:  opts.Timeout,
		failOpen: opts.FailOpen,
		breaker:  opts.Breaker,
		logger:   opts.Logger,
		allow:    redis.NewScript(allowScript),
		adjust:   redis.NewScript(adjustScript),
		pending:  make(map[string]adjustment),
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
// amounts of the buckets ride along, so the steady state is one round trip
// per request.
func (r *Redis) AllowCounted(ctx context.Context, c *Counter, reqs ...Request) (Decision, error) {
	var (
		keyBuf   [inlineReqs + 1]string
		idxBuf   [inlineReqs]int
		argBuf   [4 + 3*inlineReqs]any
		deltaBuf [inlineReqs]int64
	)
	keys, idx, deltas := keyBuf[:0], idxBuf[:0], deltaBuf[:0]
	args := append(argBuf[:0], windowMicros, "", "", 0)
	for i, q := range reqs {
		if q.Cost < 0 {
			return Decision{}, fmt.Errorf("allow %s: negative cost %d", q.Key, q.Cost)
		}
		if q.Limit > 0 {
			keys = append(keys, r.prefix+q.Key)
			idx = append(idx, i)
		}
	}
	if len(keys) == 0 && c == nil {
		return Decision{Allowed: true}, nil
	}
	r.mu.Lock()
	for _, i := range idx {
		q := reqs[i]
		d := r.pending[q.Key]
		if d.delta != 0 {
			delete(r.pending, q.Key)
		}
		deltas = append(deltas, d.delta)
		args = append(args, q.Limit, q.Cost, d.delta)
	}
	r.mu.Unlock()
	if c != nil {
		keys = append(keys, r.prefix+c.Key)
		args[1] = c.Max
		if c.Seed >= 0 {
			args[2] = c.Seed
		}
		args[3] = max(c.TTL.Milliseconds(), 1)
	}
	var res []int64
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		var s redis.Scripter = r.client
		if r.inflight.Add(1) > r.direct {
			s = r.scripter
		}
		defer r.inflight.Add(-1)
		res, err = r.allow.Run(ctx, s, keys, args...).Int64Slice()
		return err
	})
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
	switch {
	case len(res) == 2 && res[0] == 0:
		return Decision{Allowed: true, Count: res[1]}, nil
	case len(res) == 1 && res[0] == -1:
		return Decision{CounterMissing: true}, nil
	case len(res) == 1 && res[0] == -2:
		return Decision{CounterExceeded: true}, nil
	case len(res) == 2 && res[0] > 0 && res[1] >= 1 && res[1] <= int64(len(idx)):
		return Decision{RetryAfter: roundUp(res[0] * int64(time.Microsecond)), Key: reqs[idx[res[1]-1]].Key}, nil
	}
	return Decision{}, fmt.Errorf("allow: unexpected script reply %v", res)
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
