// Package breaker is a circuit breaker for calls to a shared dependency
// (Redis): after a run of consecutive failures it stops calling for a
// cooldown, so requests fail fast instead of each waiting for a timeout,
// then lets one probe through and closes again when the probe succeeds.
package breaker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// ErrOpen is returned (by Do, without calling fn) while the breaker is open.
// Callers may wrap it.
var ErrOpen = errors.New("circuit breaker open")

// Defaults for zero Options fields.
const (
	DefaultFailures = 5
	DefaultCooldown = time.Second
)

// Options tune a Breaker. Zero fields take their defaults.
type Options struct {
	// Failures is how many consecutive failures open the breaker
	// (DefaultFailures).
	Failures int
	// Cooldown is how long the breaker stays open before letting one probe
	// through (DefaultCooldown).
	Cooldown time.Duration
	// IsFailure decides which errors returned by fn count as failures of
	// the dependency. The default counts every error except
	// context.Canceled (the caller gave up, which says nothing about the
	// dependency). Callers whose fn can fail for reasons of their own (a
	// validation error, a "not found") either pass a classifier or keep
	// such errors out of fn.
	IsFailure func(error) bool
	// OnStateChange, if set, is called with true when the breaker opens and
	// false when it closes, once per transition, synchronously on the
	// goroutine that caused it: it must be quick and must not call Do.
	OnStateChange func(open bool)
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Breaker is a consecutive-failure circuit breaker. It is safe for
// concurrent use; a closed breaker costs Do two atomic loads. The zero value
// is not usable; call New.
type Breaker struct {
	failures  int64
	cooldown  time.Duration
	isFailure func(error) bool
	onChange  func(open bool)
	now       func() time.Time
	start     time.Time

	// consecutive counts failures since the last success.
	consecutive atomic.Int64
	// openUntil is when the next probe may go, as nanoseconds since start
	// plus one (so 0 means closed).
	openUntil atomic.Int64
	// probing is set while the one half-open probe is in flight.
	probing atomic.Bool
}

// New returns a closed Breaker.
func New(opts Options) *Breaker {
	if opts.Failures <= 0 {
		opts.Failures = DefaultFailures
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = DefaultCooldown
	}
	if opts.IsFailure == nil {
		opts.IsFailure = defaultIsFailure
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Breaker{
		failures:  int64(opts.Failures),
		cooldown:  opts.Cooldown,
		isFailure: opts.IsFailure,
		onChange:  opts.OnStateChange,
		now:       opts.Now,
		start:     opts.Now(),
	}
}

func defaultIsFailure(err error) bool {
	return !errors.Is(err, context.Canceled)
}

// elapsed is the breaker's clock: nanoseconds since New, plus one so it is
// never zero.
func (b *Breaker) elapsed() int64 {
	return int64(b.now().Sub(b.start)) + 1
}

// Do calls fn unless the breaker is open, and returns fn's error unchanged.
// While open it returns ErrOpen at once; once the cooldown has passed, one
// caller's fn runs as a probe (the others still get ErrOpen) and its
// success closes the breaker, its failure reopens it for another cooldown.
// fn should bound its own duration (a context timeout): a probe that never
// returns keeps the breaker open.
func (b *Breaker) Do(ctx context.Context, fn func(context.Context) error) error {
	if until := b.openUntil.Load(); until != 0 {
		if b.elapsed() < until || !b.probing.CompareAndSwap(false, true) {
			return ErrOpen
		}
		return b.probe(ctx, fn)
	}
	err := fn(ctx)
	switch {
	case err == nil || !b.isFailure(err):
		if b.consecutive.Load() != 0 {
			b.consecutive.Store(0)
		}
	case b.consecutive.Add(1) >= b.failures:
		if b.openUntil.CompareAndSwap(0, b.elapsed()+int64(b.cooldown)) {
			b.notify(true)
		}
	}
	return err
}

// probe runs fn as the single half-open trial. A failure reopens the
// breaker; a probe whose caller gave up (context.Canceled) proves nothing
// and leaves it half-open for the next caller; anything else closes it.
func (b *Breaker) probe(ctx context.Context, fn func(context.Context) error) error {
	defer b.probing.Store(false)
	err := fn(ctx)
	switch {
	case err != nil && b.isFailure(err):
		b.openUntil.Store(b.elapsed() + int64(b.cooldown))
	case errors.Is(err, context.Canceled):
		// Inconclusive: the next caller probes.
	default:
		b.consecutive.Store(0)
		b.openUntil.Store(0)
		b.notify(false)
	}
	return err
}

func (b *Breaker) notify(open bool) {
	if b.onChange != nil {
		b.onChange(open)
	}
}

// Open reports whether the breaker is open or half-open, i.e. whether the
// dependency is considered away (for readiness checks).
func (b *Breaker) Open() bool {
	return b.openUntil.Load() != 0
}
