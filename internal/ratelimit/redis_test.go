package ratelimit_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/ratelimit/limitertest"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// redisOptions parses the test server's URL. ContextTimeoutEnabled lets
// the per-call context deadline bound socket reads, as in production.
func redisOptions(t *testing.T) (*redis.Options, string) {
	t.Helper()
	u, prefix := testenv.Redis(t)
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("parse TEST_REDIS_URL: %v", err)
	}
	opt.ContextTimeoutEnabled = true
	return opt, prefix
}

func newClient(t *testing.T, opt *redis.Options) *redis.Client {
	t.Helper()
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// clientTo returns a client for a server at addr that may not answer.
func clientTo(t *testing.T, addr string) *redis.Client {
	t.Helper()
	return newClient(t, &redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialTimeout: time.Second})
}

func TestRedis(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	client := newClient(t, opt)
	limitertest.Run(t, func(*testing.T) ratelimit.Limiter {
		// The suite checks semantics, not latency: a loaded test machine
		// must not turn a slow answer into a failure.
		return ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	})
}

// TestRedisBatchesConcurrentDecisions checks that concurrent decisions
// share script calls and stay exact: 64 callers race for a counter of 1,000
// created on first use, and every count from 1 to 1,000 is handed out
// exactly once, in fewer script calls than decisions.
func TestRedisBatchesConcurrentDecisions(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	client := newClient(t, opt)
	hook := &testenv.CommandCounter{}
	client.AddHook(hook)
	l := ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	const (
		workers = 64
		each    = 20
		limit   = 1000
	)
	c := &ratelimit.Counter{Key: "tok:batch:requests", Max: limit, Seed: 0, TTL: time.Hour}
	rate := ratelimit.Request{Key: "tok:batch:rpm", Limit: 1_000_000, Cost: 1}
	var (
		mu       sync.Mutex
		seen     = map[int64]int{}
		exceeded atomic.Int64
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range each {
				d, err := l.AllowCounted(context.Background(), c, rate)
				switch {
				case err != nil:
					t.Errorf("AllowCounted: %v", err)
					return
				case d.Allowed:
					mu.Lock()
					seen[d.Count]++
					mu.Unlock()
				case d.CounterExceeded:
					exceeded.Add(1)
				default:
					t.Errorf("AllowCounted = %+v, want admitted or counter exceeded", d)
				}
			}
		})
	}
	wg.Wait()
	for n := int64(1); n <= limit; n++ {
		if seen[n] != 1 {
			t.Fatalf("count %d handed out %d times, want once (%d counts seen)", n, seen[n], len(seen))
		}
	}
	if len(seen) != limit || exceeded.Load() != workers*each-limit {
		t.Fatalf("%d admitted, %d refused; want %d and %d", len(seen), exceeded.Load(), limit, workers*each-limit)
	}
	if got, err := client.Get(context.Background(), prefix+"rl:"+c.Key).Int64(); err != nil || got != limit {
		t.Fatalf("counter in Redis = %d, %v; want %d", got, err, limit)
	}
	calls := hook.Count()
	if calls >= workers*each {
		t.Fatalf("%d Redis commands for %d concurrent decisions, want fewer (batched)", calls, workers*each)
	}
	t.Logf("%d decisions in %d Redis commands", workers*each, calls)
}

// TestRedisBatchKeepsDecisionsApart checks that decisions sharing a script
// call see each other in order but never mix their answers: concurrent
// callers on a tight bucket, a roomy one and a missing counter each get
// their own key's verdict.
func TestRedisBatchKeepsDecisionsApart(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	l := ratelimit.NewRedis(newClient(t, opt), ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	ctx := context.Background()
	tight := ratelimit.Request{Key: "tok:tight:rpm", Limit: 5, Cost: 1}
	roomy := ratelimit.Request{Key: "tok:roomy:rpm", Limit: 1_000_000, Cost: 1}
	missing := &ratelimit.Counter{Key: "tok:missing:requests", Max: 10, Seed: -1, TTL: time.Hour}
	var tightAdmitted, roomyAdmitted, missingSeen atomic.Int64
	var wg sync.WaitGroup
	for i := range 90 {
		wg.Go(func() {
			var d ratelimit.Decision
			var err error
			switch i % 3 {
			case 0:
				d, err = l.Allow(ctx, tight)
				if err == nil && d.Allowed {
					tightAdmitted.Add(1)
				} else if err == nil && (d.Key != tight.Key || d.RetryAfter <= 0) {
					t.Errorf("tight refusal = %+v, want its key and a wait", d)
				}
			case 1:
				d, err = l.Allow(ctx, roomy)
				if err == nil && d.Allowed {
					roomyAdmitted.Add(1)
				}
			default:
				d, err = l.AllowCounted(ctx, missing, roomy)
				if err == nil && d.CounterMissing && !d.Allowed {
					missingSeen.Add(1)
				}
			}
			if err != nil {
				t.Errorf("decision %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if tightAdmitted.Load() != 5 || roomyAdmitted.Load() != 30 || missingSeen.Load() != 30 {
		t.Fatalf("admitted tight %d (want 5), roomy %d (want 30); counter missing %d (want 30)",
			tightAdmitted.Load(), roomyAdmitted.Load(), missingSeen.Load())
	}
}

// TestRedisCallersGivingUpDoNotStall checks that callers whose context
// ends while their decision is queued (or is being sent for others) leave
// the queue moving: every caller returns, and a later decision is made.
func TestRedisCallersGivingUpDoNotStall(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	l := ratelimit.NewRedis(newClient(t, opt), ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	req := ratelimit.Request{Key: "tok:giveup:rpm", Limit: 1_000_000, Cost: 1}
	var wg sync.WaitGroup
	var gaveUp, decided atomic.Int64
	for i := range 300 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%7)*50*time.Microsecond)
			defer cancel()
			d, err := l.Allow(ctx, req)
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				gaveUp.Add(1)
			case err != nil || !d.Allowed:
				t.Errorf("Allow = %+v, %v; want admitted or the context's error", d, err)
			default:
				decided.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("callers still waiting after 30s: the queue stalled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d, err := l.Allow(ctx, req); err != nil || !d.Allowed {
		t.Fatalf("Allow after %d callers gave up and %d were decided = %+v, %v; want admitted", gaveUp.Load(), decided.Load(), d, err)
	}
	t.Logf("%d gave up, %d decided", gaveUp.Load(), decided.Load())
}

// TestRedisSharedAcrossReplicas checks that limiters on separate
// connections (two proxy replicas) share their buckets.
func TestRedisSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	a := ratelimit.NewRedis(newClient(t, opt), ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	b := ratelimit.NewRedis(newClient(t, opt), ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	ctx := context.Background()
	req := ratelimit.Request{Key: "tok:shared:rpm", Limit: 10, Cost: 1}
	admitted := 0
	for i := range 30 {
		l := a
		if i%2 == 1 {
			l = b
		}
		d, err := l.Allow(ctx, req)
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 10 {
		t.Fatalf("%d of 30 admitted across two replicas, want 10", admitted)
	}
	if err := a.Adjust(ctx, req.Key, req.Limit, -3); err != nil {
		t.Fatalf("Adjust: %v", err)
	}
	// Adjustments reach Redis with the next decision or the next flush.
	a.Flush(ctx)
	if d, err := b.Allow(ctx, ratelimit.Request{Key: req.Key, Limit: 10, Cost: 3}); err != nil || !d.Allowed {
		t.Fatalf("Allow on the other replica after giving back 3 = %+v, %v; want allowed", d, err)
	}
}

// TestRedisOneRoundTripPerCall checks the hot-path budget: one command per
// Allow (whatever the number of keys), with the Adjust amounts riding along.
func TestRedisOneRoundTripPerCall(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	client := newClient(t, opt)
	hook := &testenv.CommandCounter{}
	client.AddHook(hook)
	l := ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	ctx := context.Background()
	reqs := []ratelimit.Request{
		{Key: "tok:1:rpm", Limit: 1000, Cost: 1},
		{Key: "tok:1:tpm", Limit: 100000, Cost: 500},
		{Key: "prj:1:rpm", Limit: 1000, Cost: 1},
		{Key: "prj:1:tpm", Limit: 0, Cost: 500},
	}
	// The first call may load the script (EVALSHA, then EVAL).
	if _, err := l.Allow(ctx, reqs...); err != nil {
		t.Fatal(err)
	}
	if err := l.Adjust(ctx, "tok:1:tpm", 100000, 10); err != nil {
		t.Fatal(err)
	}
	hook.Reset()
	for range 10 {
		if d, err := l.Allow(ctx, reqs...); err != nil || !d.Allowed {
			t.Fatalf("Allow = %+v, %v", d, err)
		}
		if err := l.Adjust(ctx, "tok:1:tpm", 100000, -10); err != nil {
			t.Fatal(err)
		}
	}
	if n := hook.Count(); n != 10 {
		t.Fatalf("%d Redis commands for 10 Allow and 10 Adjust calls, want 10", n)
	}
	// Keys expire once their bucket would be full again.
	ttl, err := client.PTTL(ctx, prefix+"rl:tok:1:rpm").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > ratelimit.Window {
		t.Fatalf("bucket TTL %v, want within (0, %v]", ttl, ratelimit.Window)
	}
}

// closedAddr returns a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// silentAddr returns the address of a server that accepts connections and
// never answers, like a Redis that hangs.
func silentAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestRedisUnreachable(t *testing.T) {
	const timeout = 50 * time.Millisecond
	servers := []struct {
		name string
		addr func(*testing.T) string
	}{
		{"connection refused", closedAddr},
		{"no answer", silentAddr},
	}
	for _, srv := range servers {
		for _, failOpen := range []bool{true, false} {
			name := srv.name + "/fail closed"
			if failOpen {
				name = srv.name + "/fail open"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				l := ratelimit.NewRedis(clientTo(t, srv.addr(t)), ratelimit.RedisOptions{
					Timeout:  timeout,
					FailOpen: failOpen,
					// Never opens here: every call must reach the server.
					Breaker: breaker.New(breaker.Options{Failures: 1 << 30}),
				})
				ctx := context.Background()
				req := ratelimit.Request{Key: "tok:1:rpm", Limit: 1, Cost: 1}
				for range 3 {
					start := time.Now()
					d, err := l.Allow(ctx, req)
					if took := time.Since(start); took > 4*timeout {
						t.Fatalf("Allow took %v with Timeout %v", took, timeout)
					}
					if failOpen && (err != nil || !d.Allowed) {
						t.Fatalf("fail open: Allow = %+v, %v; want allowed", d, err)
					}
					if !failOpen && (!errors.Is(err, ratelimit.ErrUnavailable) || d.Allowed) {
						t.Fatalf("fail closed: Allow = %+v, %v; want ErrUnavailable", d, err)
					}
					// Adjust never waits on Redis: it is kept for later
					// (waiting would take the whole timeout).
					start = time.Now()
					if err := l.Adjust(ctx, req.Key, req.Limit, 5); err != nil || time.Since(start) >= timeout/2 {
						t.Fatalf("Adjust = %v after %v; want nil at once", err, time.Since(start))
					}
				}
				want := ratelimit.RedisStats{Errors: 3}
				if failOpen {
					want.FailOpen = 3
				}
				if got := l.Stats(); got != want {
					t.Fatalf("Stats() = %+v, want %+v", got, want)
				}
			})
		}
	}
}

// TestRedisBreakerOpens checks that once the breaker opens, calls stop
// waiting for Redis: a call that waited would take the whole timeout, one
// that does not takes a small fraction of it (the margin is for a loaded
// machine's scheduling, not for Redis).
func TestRedisBreakerOpens(t *testing.T) {
	const timeout = 200 * time.Millisecond
	l := ratelimit.NewRedis(clientTo(t, silentAddr(t)), ratelimit.RedisOptions{
		Timeout: timeout,
		Breaker: breaker.New(breaker.Options{Failures: 3, Cooldown: time.Hour}),
	})
	ctx := context.Background()
	req := ratelimit.Request{Key: "tok:1:rpm", Limit: 1, Cost: 1}
	for i := range 3 {
		if !l.Healthy() {
			t.Fatalf("unhealthy after %d failures, want 3 to open the breaker", i)
		}
		if _, err := l.Allow(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Allow = %v, want a timeout", err)
		}
	}
	if l.Healthy() {
		t.Fatal("healthy after 3 timeouts")
	}
	for range 100 {
		start := time.Now()
		_, err := l.Allow(ctx, req)
		if took := time.Since(start); took >= timeout/2 {
			t.Fatalf("Allow took %v with the breaker open, want far less than the %v Redis timeout", took, timeout)
		}
		if !errors.Is(err, breaker.ErrOpen) || !errors.Is(err, ratelimit.ErrUnavailable) {
			t.Fatalf("Allow = %v, want ErrUnavailable wrapping ErrOpen", err)
		}
	}
}

// forwarder relays TCP connections to a target and can be stopped and
// started again on the same address, to take Redis away and bring it back.
type forwarder struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener // nil while stopped
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	f := &forwarder{t: t, target: target, addr: "127.0.0.1:0", conns: make(map[net.Conn]struct{})}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *forwarder) start() {
	f.t.Helper()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatalf("forwarder listen: %v", err)
	}
	f.mu.Lock()
	f.ln, f.addr = ln, ln.Addr().String()
	f.mu.Unlock()
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", f.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			if !f.track(c, up) {
				return
			}
			f.wg.Go(func() { f.pipe(c, up) })
			f.wg.Go(func() { f.pipe(up, c) })
		}
	})
}

// track registers a relayed pair; false (and both closed) when stopped.
func (f *forwarder) track(a, b net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln == nil {
		_, _ = a.Close(), b.Close()
		return false
	}
	f.conns[a], f.conns[b] = struct{}{}, struct{}{}
	return true
}

func (f *forwarder) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_, _ = dst.Close(), src.Close()
}

// stop closes the listener and every relayed connection and waits for the
// relaying goroutines.
func (f *forwarder) stop() {
	f.mu.Lock()
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
		delete(f.conns, c)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestRedisRecovers takes Redis away until the breaker opens, brings it
// back, and checks that the limiter recovers by itself. The breaker's
// clock is the test's: it moves only past a cooldown, before a probe.
func TestRedisRecovers(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64 // time.Duration
	now := func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	opt, prefix := redisOptions(t)
	fwd := newForwarder(t, opt.Addr)
	viaFwd := *opt
	viaFwd.Addr = fwd.addr
	viaFwd.MaxRetries = -1
	var changes []bool
	var mu sync.Mutex
	l := ratelimit.NewRedis(newClient(t, &viaFwd), ratelimit.RedisOptions{
		Prefix:  prefix,
		Timeout: time.Second,
		Breaker: breaker.New(breaker.Options{Failures: 2, Cooldown: time.Minute, Now: now, OnStateChange: func(open bool) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, open)
		}}),
	})
	ctx := context.Background()
	req := ratelimit.Request{Key: "tok:recover:rpm", Limit: 1000, Cost: 1}
	if d, err := l.Allow(ctx, req); err != nil || !d.Allowed {
		t.Fatalf("Allow with Redis up = %+v, %v", d, err)
	}

	fwd.stop()
	for i := 0; l.Healthy(); i++ {
		if i == 10 {
			t.Fatal("breaker still closed after 10 calls with Redis away")
		}
		if _, err := l.Allow(ctx, req); !errors.Is(err, ratelimit.ErrUnavailable) {
			t.Fatalf("Allow with Redis away = %v, want ErrUnavailable", err)
		}
	}

	fwd.start()
	// A probe may still meet a connection the outage broke; a few more
	// cooldowns must do.
	for i := 0; !l.Healthy(); i++ {
		if i == 5 {
			t.Fatal("limiter did not recover after 5 probes with Redis back")
		}
		elapsed.Add(int64(time.Minute))
		_, _ = l.Allow(ctx, req)
	}
	if d, err := l.Allow(ctx, req); err != nil || !d.Allowed {
		t.Fatalf("Allow after recovery = %+v, %v", d, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("breaker state changes %v, want [true false]", changes)
	}
}

func TestRedisAllowCounted(t *testing.T) {
	t.Parallel()
	opt, prefix := redisOptions(t)
	l := ratelimit.NewRedis(newClient(t, opt), ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	ctx := context.Background()
	c := &ratelimit.Counter{Key: "q:tok", Max: 3, Seed: -1, TTL: time.Minute}
	rate := ratelimit.Request{Key: "tok:c:rpm", Limit: 100, Cost: 1}
	if d, err := l.AllowCounted(ctx, c, rate); err != nil || d.Allowed || !d.CounterMissing {
		t.Fatalf("unseeded counter = %+v, %v; want CounterMissing", d, err)
	}
	c.Seed = 1
	for want := int64(2); want <= 3; want++ {
		d, err := l.AllowCounted(ctx, c, rate)
		if err != nil || !d.Allowed || d.Count != want {
			t.Fatalf("AllowCounted = %+v, %v; want admitted with count %d", d, err, want)
		}
	}
	if d, err := l.AllowCounted(ctx, c, rate); err != nil || d.Allowed || !d.CounterExceeded {
		t.Fatalf("counter at max = %+v, %v; want CounterExceeded", d, err)
	}
	// A refusal by a bucket consumes nothing, the counter included.
	c2 := &ratelimit.Counter{Key: "q:tok2", Max: 10, Seed: 0, TTL: time.Minute}
	tight := ratelimit.Request{Key: "tok:c2:rpm", Limit: 1, Cost: 1}
	if d, err := l.AllowCounted(ctx, c2, tight); err != nil || !d.Allowed || d.Count != 1 {
		t.Fatalf("first = %+v, %v", d, err)
	}
	if d, err := l.AllowCounted(ctx, c2, tight); err != nil || d.Allowed || d.RetryAfter <= 0 || d.Key != tight.Key {
		t.Fatalf("rate-refused = %+v, %v; want refused by %s", d, err, tight.Key)
	}
	if d, err := l.AllowCounted(ctx, c2); err != nil || !d.Allowed || d.Count != 2 {
		t.Fatalf("counter after a rate refusal = %+v, %v; want count 2", d, err)
	}
}
