// Package ratelimit decides whether a request fits its per-minute budgets
// (requests/min and tokens/min, per token and per project).
//
// Limiter is implemented in process by Memory (single instance) and by a
// Redis implementation (cluster-wide); both pass the conformance suite in
// package limitertest and share the semantics documented here.
//
// Every key is a GCRA bucket: its burst is Limit units and it refills at
// Limit units per minute, one unit every emission interval (1m/Limit). A
// request of Cost n consumes n intervals. A request whose Cost exceeds its
// Limit can never fit the burst; it is admitted only when its bucket is
// completely full (it then leaves the bucket in debt), so a huge prompt is
// delayed, never starved forever.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// ErrLimited is the error callers wrap when they turn a refused Decision into
// a request error (429 with Retry-After). Limiter methods never return it.
var ErrLimited = errors.New("rate limited")

// Window is the period every Limit is expressed in.
const Window = time.Minute

// Request asks to spend Cost units of a per-minute budget Limit under Key
// (e.g. "tok:<id>:rpm"). Limit <= 0 means unlimited: the request is skipped.
// Cost 0 only checks that the key is not in debt; a negative Cost is an
// error.
type Request struct {
	Key   string
	Limit int64
	Cost  int64
}

// Decision is the outcome of Allow.
type Decision struct {
	// Allowed reports whether every request was admitted (and consumed).
	Allowed bool
	// RetryAfter is, when !Allowed, how long until the refused requests
	// would be admitted, rounded up to the millisecond (always > 0).
	RetryAfter time.Duration
	// Key is, when !Allowed, the key that refused: the one with the longest
	// wait when several did.
	Key string
	// Count, CounterMissing and CounterExceeded report on the counter of
	// Redis.AllowCounted: its new value when admitted, or why it refused.
	Count           int64
	CounterMissing  bool
	CounterExceeded bool
}

// Limiter makes rate-limit decisions. Implementations are safe for
// concurrent use.
type Limiter interface {
	// Allow admits all requests or none: nothing is consumed when any one is
	// refused. A refusal is a Decision with Allowed false and a nil error;
	// the error reports a failure to decide (or a negative Cost). Allow with
	// no requests admits.
	Allow(ctx context.Context, reqs ...Request) (Decision, error)
	// Adjust adds delta (may be negative) units to key's usage without an
	// admission check: used to reconcile a tokens/min reservation with the
	// real token count after the response. A positive delta may put the key
	// in debt; a negative one never gives more than a full bucket. Limit <= 0
	// does nothing.
	Adjust(ctx context.Context, key string, limit int64, delta int64) error
}

// interval returns the emission interval of limit (the time one unit takes
// to refill), never less than a nanosecond. limit must be > 0.
func interval(limit int64) int64 {
	return max(int64(Window)/limit, 1)
}

// gcra applies a request of cost units to a bucket whose theoretical arrival
// time is tat (nanoseconds on the same clock as now; a tat <= now is a full
// bucket). It returns the bucket's tat after admitting the request and how
// long the request must wait to be admitted (0: admitted now). The burst
// tolerance is limit intervals, computed from the truncated interval so
// exactly limit units fit a full bucket.
func gcra(tat, now, limit, cost int64) (newTAT, wait int64) {
	t := interval(limit)
	base := max(tat, now)
	newTAT = base + cost*t
	if cost > limit {
		return newTAT, base - now
	}
	return newTAT, max(newTAT-limit*t-now, 0)
}

// roundUp rounds a positive wait in nanoseconds up to the next millisecond,
// the resolution RetryAfter is reported in.
func roundUp(wait int64) time.Duration {
	return (time.Duration(wait) + time.Millisecond - 1).Truncate(time.Millisecond)
}
