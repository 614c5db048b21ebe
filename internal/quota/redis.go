package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// seedTTLMargin keeps a counter this long after its token expires, so a
// request racing the expiry still finds it.
const seedTTLMargin = time.Hour

// FreshCopy is how recently a token copy must have been read from the
// database (store.Token.LoadedAt) to seed a missing counter without reading
// the database again: a token authenticated from the database for this
// very request (a cold token) is admitted in one Redis round trip and no
// second database read. It is well under the usage flush interval by which
// the database's request_count trails Redis anyway.
const FreshCopy = 250 * time.Millisecond

// RedisOptions configure a Redis counter; every field but Logger is
// required.
type RedisOptions struct {
	// Limiter runs the counter's script, in the same call as the rate
	// limits (ConsumeWith); its timeout, breaker and fail-open policy apply.
	Limiter *ratelimit.Redis
	// Store seeds a counter Redis does not hold from the token's
	// request_count.
	Store Store
	// Toucher writes admitted requests back to the database in batches.
	Toucher Toucher
	Logger  *slog.Logger // nil discards
}

// Redis counts in Redis, exactly across replicas: the token's counter is
// checked and incremented atomically by the rate limiter's script, together
// with the request's rate limits, so a request costs one round trip. Every
// admitted request is also Touched, so the database's request_count follows
// in batches.
//
// A counter Redis does not hold (first use of a token, or Redis lost its
// data) is seeded from the database's request_count: from the token copy
// itself in the same script call when the copy was read within FreshCopy
// (a cold token), else read again and sent with a second script call;
// concurrent seeds are harmless, the first one wins; the counter
// expires an hour after its token. The database lags Redis by the Touches
// not yet flushed (at most one usage flush interval of requests, more while
// the database is away), so a reseed after Redis lost its data can admit
// that many requests beyond the quota. While Redis is away and the limiter
// fails open, requests are admitted without counting in Redis (only in the
// database): exactness is traded for availability.
//
// Redis is safe for concurrent use.
type Redis struct {
	limiter *ratelimit.Redis
	st      Store
	toucher Toucher
	logger  *slog.Logger
	seeds   atomic.Int64
}

var _ Counter = (*Redis)(nil)

// NewRedis returns a Redis counter. It does not contact Redis.
func NewRedis(opts RedisOptions) *Redis {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Redis{limiter: opts.Limiter, st: opts.Store, toucher: opts.Toucher, logger: opts.Logger}
}

// Consume implements Counter with one Redis round trip (two when the
// counter must be seeded).
func (r *Redis) Consume(ctx context.Context, t *store.Token) error {
	_, err := r.ConsumeWith(ctx, t)
	return err
}

// ConsumeWith decides t's quota and the rate limits reqs in one atomic
// script: all are consumed or none. A refusal by a rate limit is a Decision
// that is not Allowed (and a nil error); a used-up quota is an error
// wrapping store.ErrQuotaExceeded; Redis trouble while failing closed is an
// error wrapping ErrUnavailable.
func (r *Redis) ConsumeWith(ctx context.Context, t *store.Token, reqs ...ratelimit.Request) (ratelimit.Decision, error) {
	if t.MaxRequests == nil {
		d, err := r.limiter.Allow(ctx, reqs...)
		return r.result(t, d, err)
	}
	c := &ratelimit.Counter{Key: "q:" + t.ID, Max: *t.MaxRequests, Seed: -1}
	if !t.LoadedAt.IsZero() && time.Since(t.LoadedAt) < FreshCopy {
		c.Seed, c.TTL = t.RequestCount, seedTTL(t.ExpiresAt)
	}
	d, err := r.limiter.AllowCounted(ctx, c, reqs...)
	if err == nil && d.CounterMissing {
		if err = r.seed(ctx, t, c); err == nil {
			d, err = r.limiter.AllowCounted(ctx, c, reqs...)
		}
	}
	return r.result(t, d, err)
}

func (r *Redis) result(t *store.Token, d ratelimit.Decision, err error) (ratelimit.Decision, error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return d, fmt.Errorf("consume quota: %w", err)
	case err != nil:
		return d, fmt.Errorf("consume quota: %w: %w", ErrUnavailable, err)
	case d.CounterExceeded:
		return d, fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded)
	case d.CounterMissing:
		return d, fmt.Errorf("consume quota: %w: counter still missing after seeding", ErrUnavailable)
	case d.Allowed:
		r.toucher.Touch(t.ID, time.Now())
	}
	return d, nil
}

// seed sets c.Seed and c.TTL from the token's request_count in the
// database. While the database cannot answer, the caller's copy of the
// token (cached, so possibly older) seeds the counter instead: a cached
// token keeps working while PostgreSQL is away (SPEC §7).
func (r *Redis) seed(ctx context.Context, t *store.Token, c *ratelimit.Counter) error {
	count, expires := t.RequestCount, t.ExpiresAt
	cur, err := r.st.GetToken(ctx, t.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("seed quota counter: %w", err)
	case err != nil:
		r.logger.WarnContext(ctx, "seed quota counter from the cached token", "token_id", t.ID, "error", err)
	default:
		count, expires = cur.RequestCount, cur.ExpiresAt
	}
	r.seeds.Add(1)
	c.Seed, c.TTL = count, seedTTL(expires)
	return nil
}

// seedTTL is the lifetime of a counter for a token expiring at expires.
func seedTTL(expires time.Time) time.Duration {
	return max(time.Until(expires), 0) + seedTTLMargin
}

// Seeds reports how many counters were seeded from a second database read
// (not those seeded from a fresh copy).
func (r *Redis) Seeds() int64 { return r.seeds.Load() }
