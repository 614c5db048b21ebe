// Package invalidate fans cache invalidations out to every replica (SPEC
// §6.1, §7): a token revocation, a deactivation or a limit change made on
// one replica reaches the authentication cache of all the others within a
// second, over Redis pub/sub or, without Redis, PostgreSQL LISTEN/NOTIFY.
//
// The channel is best effort. While it is down, the cache TTL bounds how
// stale another replica can be; after every (re)subscription the local
// cache is flushed, because messages may have been missed meanwhile.
package invalidate

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Target is the local cache. *auth.Authenticator satisfies it.
type Target interface {
	InvalidateToken(id string)
	// InvalidateProject drops the project and every cached token of it.
	InvalidateProject(id string)
	Flush()
}

// Timing of the fan-out.
const (
	// publishTimeout bounds one publish.
	publishTimeout = time.Second
	// queueSize bounds the invalidations waiting to be published; beyond
	// it they are dropped (the TTL still bounds staleness).
	queueSize = 1024
	// minBackoff and maxBackoff bound the wait between subscription
	// attempts.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// healthInterval is how long a subscription may stay silent before it
	// is probed, so a connection that died without a reset is noticed.
	healthInterval = 15 * time.Second
	// probeTimeout bounds the probe of a silent subscription.
	probeTimeout = 5 * time.Second
)

// Message prefixes: "t:<token id>" and "p:<project id>".
const (
	tokenPrefix   = "t:"
	projectPrefix = "p:"
)

// transport is a pub/sub channel shared by the replicas.
type transport interface {
	// publish sends msg to every subscriber, including this replica.
	publish(ctx context.Context, msg string) error
	// listen subscribes, calls up once the subscription is live, then
	// passes every message to deliver until the connection fails (an
	// error) or ctx ends.
	listen(ctx context.Context, up func(), deliver func(msg string)) error
	// name names the channel kind in logs.
	name() string
}

// Bus invalidates the local cache and fans each invalidation out to every
// replica. It satisfies manage.Invalidator. Its methods are safe for
// concurrent use.
type Bus struct {
	target    Target
	transport transport // nil: single instance
	logger    *slog.Logger
	queue     chan string
	connected atomic.Bool
	overflow  atomic.Bool // the queue is full and invalidations are dropped
	started   atomic.Bool
}

// NewLocal returns a Bus for a single instance: it only invalidates t.
func NewLocal(t Target) *Bus {
	return &Bus{target: t, logger: slog.New(slog.DiscardHandler)}
}

func newBus(tr transport, t Target, logger *slog.Logger) *Bus {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Bus{
		target:    t,
		transport: tr,
		logger:    logger.With("channel_kind", tr.name()),
		queue:     make(chan string, queueSize),
	}
}

// InvalidateToken drops the token from the local cache at once, then queues
// the invalidation for the other replicas. It never blocks on the network.
func (b *Bus) InvalidateToken(id string) {
	b.target.InvalidateToken(id)
	b.enqueue(tokenPrefix + id)
}

// InvalidateProject drops the project and its cached tokens from the local
// cache at once, then queues the invalidation for the other replicas. It
// never blocks on the network.
func (b *Bus) InvalidateProject(id string) {
	b.target.InvalidateProject(id)
	b.enqueue(projectPrefix + id)
}

func (b *Bus) enqueue(msg string) {
	if b.transport == nil {
		return
	}
	select {
	case b.queue <- msg:
	default:
		if b.overflow.CompareAndSwap(false, true) {
			b.logger.Warn("invalidation queue full; other replicas rely on the cache ttl until it drains",
				"queue_size", queueSize)
		}
	}
}

// Connected reports whether the subscription is live. A local Bus has
// nothing to subscribe to and is always connected.
func (b *Bus) Connected() bool {
	return b.transport == nil || b.connected.Load()
}

// Run owns the subscription and the publishing of queued invalidations. It
// (re)subscribes with exponential back-off and, after every successful
// subscription, flushes the local cache. It returns nil when ctx ends;
// queued invalidations not yet published are dropped then. Call it once;
// for a local Bus it just waits for ctx.
func (b *Bus) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("invalidation bus: Run called twice")
	}
	if b.transport == nil {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	wg.Go(func() { b.publishLoop(ctx) })
	b.subscribeLoop(ctx)
	wg.Wait()
	return nil
}

// publishLoop publishes queued invalidations, each within publishTimeout,
// and logs a failure once per outage.
func (b *Bus) publishLoop(ctx context.Context) {
	failing := false
	for {
		var msg string
		select {
		case <-ctx.Done():
			return
		case msg = <-b.queue:
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := b.transport.publish(pctx, msg)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			b.logger.Warn("publish invalidation; other replicas rely on the cache ttl until it recovers",
				"error", err)
		case err == nil:
			if failing {
				failing = false
				b.logger.Info("publishing invalidations again")
			}
			if b.overflow.CompareAndSwap(true, false) {
				b.logger.Info("invalidation queue has room again")
			}
		}
	}
}

// subscribeLoop keeps a subscription open until ctx ends.
func (b *Bus) subscribeLoop(ctx context.Context) {
	backoff := minBackoff
	lost := false // an outage has been logged and not yet recovered
	for {
		wasUp := false
		err := b.transport.listen(ctx, func() {
			wasUp = true
			b.connected.Store(true)
			// Invalidations may have been missed while unsubscribed.
			b.target.Flush()
			if lost {
				lost = false
				b.logger.Info("invalidation subscription restored; cache flushed")
			}
		}, b.deliver)
		b.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			backoff = minBackoff
		}
		if !lost {
			lost = true
			b.logger.Warn("invalidation subscription down; retrying, the cache ttl bounds staleness meanwhile",
				"error", err)
		} else {
			b.logger.Debug("invalidation subscription retry failed", "error", err)
		}
		// Up to 20% jitter keeps replicas from reconnecting in lockstep.
		wait := backoff + rand.N(backoff/5+1)
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// deliver applies a message from any replica, this one included (a second
// invalidation is harmless).
func (b *Bus) deliver(msg string) {
	switch {
	case strings.HasPrefix(msg, tokenPrefix) && len(msg) > len(tokenPrefix):
		b.target.InvalidateToken(msg[len(tokenPrefix):])
	case strings.HasPrefix(msg, projectPrefix) && len(msg) > len(projectPrefix):
		b.target.InvalidateProject(msg[len(projectPrefix):])
	default:
		b.logger.Warn("ignoring malformed invalidation message", "length", len(msg))
	}
}

// Targets is a Target that passes every invalidation to each of its
// caches in turn (the token cache and the CORS origins).
type Targets []Target

// InvalidateToken invalidates the token in every target.
func (ts Targets) InvalidateToken(id string) {
	for _, t := range ts {
		t.InvalidateToken(id)
	}
}

// InvalidateProject invalidates the project in every target.
func (ts Targets) InvalidateProject(id string) {
	for _, t := range ts {
		t.InvalidateProject(id)
	}
}

// Flush flushes every target.
func (ts Targets) Flush() {
	for _, t := range ts {
		t.Flush()
	}
}
