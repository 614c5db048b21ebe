// Package limitertest is the conformance suite every ratelimit.Limiter must
// pass. It runs against real time (no fake clock) with limits high enough to
// keep each test fast, and every test uses keys of its own so several runs
// can share one Redis server.
package limitertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/ratelimit"
)

// Run runs the suite. newLimiter returns the Limiter under test; it is
// called once per subtest and owns its cleanup through t.
func Run(t *testing.T, newLimiter func(t *testing.T) ratelimit.Limiter) {
	tests := []struct {
		name string
		fn   func(*testing.T, ratelimit.Limiter)
	}{
		{"BurstIsExactlyLimit", testBurst},
		{"RetryAfterIsEmissionInterval", testRetryAfter},
		{"AllOrNothingAcrossKeys", testAllOrNothing},
		{"SameKeyTwiceIsChargedTwice", testSameKeyTwice},
		{"CostAboveOne", testCost},
		{"CostAboveLimit", testCostAboveLimit},
		{"AdjustPositive", testAdjustPositive},
		{"AdjustNegative", testAdjustNegative},
		{"Unlimited", testUnlimited},
		{"Refill", testRefill},
		{"KeysIndependent", testKeysIndependent},
		{"NoRequests", testNoRequests},
		{"NegativeCost", testNegativeCost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newLimiter(t))
		})
	}
}

// key returns a key no other test (or run) uses.
func key(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random key: %v", err)
	}
	return "limitertest:" + hex.EncodeToString(b) + ":" + name
}

func allow(t *testing.T, l ratelimit.Limiter, reqs ...ratelimit.Request) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(context.Background(), reqs...)
	if err != nil {
		t.Fatalf("Allow(%v): %v", reqs, err)
	}
	if d.Allowed && (d.RetryAfter != 0 || d.Key != "") {
		t.Fatalf("Allow(%v) = %+v: an admission carries no RetryAfter or Key", reqs, d)
	}
	if !d.Allowed && d.RetryAfter <= 0 {
		t.Fatalf("Allow(%v) = %+v: a refusal needs RetryAfter > 0", reqs, d)
	}
	return d
}

func mustAllow(t *testing.T, l ratelimit.Limiter, reqs ...ratelimit.Request) {
	t.Helper()
	if d := allow(t, l, reqs...); !d.Allowed {
		t.Fatalf("Allow(%v) = %+v, want allowed", reqs, d)
	}
}

func mustRefuse(t *testing.T, l ratelimit.Limiter, wantKey string, reqs ...ratelimit.Request) ratelimit.Decision {
	t.Helper()
	d := allow(t, l, reqs...)
	if d.Allowed {
		t.Fatalf("Allow(%v) allowed, want refused by %s", reqs, wantKey)
	}
	if d.Key != wantKey {
		t.Fatalf("Allow(%v) refused by %q, want %q", reqs, d.Key, wantKey)
	}
	return d
}

func adjust(t *testing.T, l ratelimit.Limiter, k string, limit, delta int64) {
	t.Helper()
	if err := l.Adjust(context.Background(), k, limit, delta); err != nil {
		t.Fatalf("Adjust(%s, %d, %d): %v", k, limit, delta, err)
	}
}

// inRange fails unless lo <= got <= hi.
func inRange(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Fatalf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}

func testBurst(t *testing.T, l ratelimit.Limiter) {
	const (
		limit    = 300
		attempts = 1000
		workers  = 32
	)
	k := key(t, "burst")
	var allowed, next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= attempts {
				d, err := l.Allow(context.Background(), ratelimit.Request{Key: k, Limit: limit, Cost: 1})
				if err != nil {
					t.Errorf("Allow: %v", err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// One unit refills every 200ms; a slow run may legitimately see some.
	refilled := int64(elapsed / (time.Minute / limit))
	if got := allowed.Load(); got < limit || got > limit+refilled {
		t.Fatalf("%d of %d concurrent attempts allowed in %v, want %d (+%d refilled)", got, attempts, elapsed, limit, refilled)
	}
}

func testRetryAfter(t *testing.T, l ratelimit.Limiter) {
	k := key(t, "retry")
	const limit = 60 // one unit per second
	start := time.Now()
	mustAllow(t, l, ratelimit.Request{Key: k, Limit: limit, Cost: limit})
	d := mustRefuse(t, l, k, ratelimit.Request{Key: k, Limit: limit, Cost: 1})
	inRange(t, "RetryAfter", d.RetryAfter, time.Second-time.Since(start)-time.Millisecond, time.Second)

	// Two units missing: two intervals.
	d = mustRefuse(t, l, k, ratelimit.Request{Key: k, Limit: limit, Cost: 2})
	inRange(t, "RetryAfter for cost 2", d.RetryAfter, 2*time.Second-time.Since(start)-time.Millisecond, 2*time.Second)
}

func testAllOrNothing(t *testing.T, l ratelimit.Limiter) {
	roomy, full := key(t, "roomy"), key(t, "full")
	const limit = 10
	mustAllow(t, l, ratelimit.Request{Key: full, Limit: limit, Cost: limit})
	mustRefuse(t, l, full,
		ratelimit.Request{Key: roomy, Limit: limit, Cost: 1},
		ratelimit.Request{Key: full, Limit: limit, Cost: 1})
	// The refused call consumed nothing from roomy: its whole burst is left.
	mustAllow(t, l, ratelimit.Request{Key: roomy, Limit: limit, Cost: limit})
	mustRefuse(t, l, roomy, ratelimit.Request{Key: roomy, Limit: limit, Cost: 1})

	// The longest wait names the key.
	short, long := key(t, "short"), key(t, "long")
	mustAllow(t, l,
		ratelimit.Request{Key: short, Limit: limit, Cost: limit},
		ratelimit.Request{Key: long, Limit: limit, Cost: limit})
	d := mustRefuse(t, l, long,
		ratelimit.Request{Key: short, Limit: limit, Cost: 1},
		ratelimit.Request{Key: long, Limit: limit, Cost: 3})
	inRange(t, "RetryAfter", d.RetryAfter, 17*time.Second, 18*time.Second)
}

func testSameKeyTwice(t *testing.T, l ratelimit.Limiter) {
	k := key(t, "twice")
	const limit = 10
	mustRefuse(t, l, k,
		ratelimit.Request{Key: k, Limit: limit, Cost: 6},
		ratelimit.Request{Key: k, Limit: limit, Cost: 6})
	mustAllow(t, l,
		ratelimit.Request{Key: k, Limit: limit, Cost: 4},
		ratelimit.Request{Key: k, Limit: limit, Cost: 6})
	mustRefuse(t, l, k, ratelimit.Request{Key: k, Limit: limit, Cost: 1})
}

func testCost(t *testing.T, l ratelimit.Limiter) {
	k := key(t, "tpm")
	const limit = 100 // tokens/min: 600ms per token
	req := func(cost int64) ratelimit.Request { return ratelimit.Request{Key: k, Limit: limit, Cost: cost} }
	mustAllow(t, l, req(40))
	mustAllow(t, l, req(40))
	d := mustRefuse(t, l, k, req(40))
	// 20 tokens are missing.
	inRange(t, "RetryAfter", d.RetryAfter, 11*time.Second, 12*time.Second)
	mustAllow(t, l, req(20))
	mustRefuse(t, l, k, req(1))
}

func testCostAboveLimit(t *testing.T, l ratelimit.Limiter) {
	const limit = 10 // 6s per unit
	k := key(t, "huge")
	req := func(cost int64) ratelimit.Request { return ratelimit.Request{Key: k, Limit: limit, Cost: cost} }
	// A full bucket admits a request larger than the burst, leaving debt.
	mustAllow(t, l, req(25))
	d := mustRefuse(t, l, k, req(1))
	inRange(t, "RetryAfter after debt", d.RetryAfter, 95*time.Second, 96*time.Second)

	// A bucket that is not full makes it wait until it is.
	k = key(t, "huge-waits")
	mustAllow(t, l, req(1))
	d = mustRefuse(t, l, k, req(25))
	inRange(t, "RetryAfter until full", d.RetryAfter, 5*time.Second, 6*time.Second)
}

func testAdjustPositive(t *testing.T, l ratelimit.Limiter) {
	const limit = 100
	k := key(t, "adjust-up")
	req := func(cost int64) ratelimit.Request { return ratelimit.Request{Key: k, Limit: limit, Cost: cost} }
	mustAllow(t, l, req(10))
	adjust(t, l, k, limit, 80)
	mustRefuse(t, l, k, req(11))
	mustAllow(t, l, req(10))
	mustRefuse(t, l, k, req(1))

	// On a fresh key, and beyond the burst (debt).
	k = key(t, "adjust-debt")
	adjust(t, l, k, limit, 150)
	d := mustRefuse(t, l, k, req(0))
	inRange(t, "RetryAfter in debt", d.RetryAfter, 29*time.Second, 30*time.Second)
}

func testAdjustNegative(t *testing.T, l ratelimit.Limiter) {
	const limit = 100
	k := key(t, "adjust-down")
	req := func(cost int64) ratelimit.Request { return ratelimit.Request{Key: k, Limit: limit, Cost: cost} }
	mustAllow(t, l, req(limit))
	mustRefuse(t, l, k, req(1))
	adjust(t, l, k, limit, -30)
	mustAllow(t, l, req(30))
	mustRefuse(t, l, k, req(1))

	// Giving back never makes the bucket larger than full.
	k = key(t, "adjust-credit")
	adjust(t, l, k, limit, -50)
	mustAllow(t, l, req(limit))
	mustRefuse(t, l, k, req(1))

	// Limit 0 is unlimited: Adjust does nothing.
	adjust(t, l, k, 0, -1000)
	mustRefuse(t, l, k, req(1))
}

func testUnlimited(t *testing.T, l ratelimit.Limiter) {
	free, limited := key(t, "free"), key(t, "limited")
	for range 50 {
		mustAllow(t, l, ratelimit.Request{Key: free, Limit: 0, Cost: 1_000_000})
		mustAllow(t, l, ratelimit.Request{Key: free, Limit: -1, Cost: 1_000_000})
	}
	adjust(t, l, free, 0, 1_000_000)
	// An unlimited request does not stop a limited one from deciding.
	mustAllow(t, l,
		ratelimit.Request{Key: free, Limit: 0, Cost: 5},
		ratelimit.Request{Key: limited, Limit: 3, Cost: 3})
	mustRefuse(t, l, limited,
		ratelimit.Request{Key: free, Limit: 0, Cost: 5},
		ratelimit.Request{Key: limited, Limit: 3, Cost: 1})
}

func testRefill(t *testing.T, l ratelimit.Limiter) {
	const (
		limit = 6000 // one unit every 10ms
		every = time.Minute / limit
		pause = 50 * time.Millisecond
	)
	k := key(t, "refill")
	req := ratelimit.Request{Key: k, Limit: limit, Cost: 1}
	start := time.Now()
	mustAllow(t, l, ratelimit.Request{Key: k, Limit: limit, Cost: limit})
	// The probe right after the burst may only pass if a whole interval has
	// gone by already (a loaded machine can take that long between calls).
	admitted := 0
	if allow(t, l, req).Allowed {
		if since := time.Since(start); since < every {
			t.Fatalf("admitted %v after draining the burst, before any refill (one unit per %v)", since, every)
		}
		admitted++
	}
	time.Sleep(pause)
	for range 100 {
		if allow(t, l, req).Allowed {
			admitted++
		}
	}
	elapsed := time.Since(start)
	// At least pause/every units refilled (one lost to the probe's timing);
	// at most what the whole elapsed time refilled.
	lo, hi := int(pause/every)-1, int(elapsed/every)+1
	if admitted < lo || admitted > hi {
		t.Fatalf("%d admitted after %v (pause %v), want within [%d, %d]", admitted, elapsed, pause, lo, hi)
	}
}

func testKeysIndependent(t *testing.T, l ratelimit.Limiter) {
	a, b := key(t, "a"), key(t, "b")
	const limit = 5
	mustAllow(t, l, ratelimit.Request{Key: a, Limit: limit, Cost: limit})
	mustRefuse(t, l, a, ratelimit.Request{Key: a, Limit: limit, Cost: 1})
	mustAllow(t, l, ratelimit.Request{Key: b, Limit: limit, Cost: limit})
	mustRefuse(t, l, b, ratelimit.Request{Key: b, Limit: limit, Cost: 1})
}

func testNoRequests(t *testing.T, l ratelimit.Limiter) {
	mustAllow(t, l)
}

func testNegativeCost(t *testing.T, l ratelimit.Limiter) {
	k := key(t, "negative")
	if _, err := l.Allow(context.Background(), ratelimit.Request{Key: k, Limit: 10, Cost: -1}); err == nil {
		t.Fatal("Allow with a negative cost: no error")
	}
	// Nothing was consumed or credited.
	mustAllow(t, l, ratelimit.Request{Key: k, Limit: 10, Cost: 10})
	mustRefuse(t, l, k, ratelimit.Request{Key: k, Limit: 10, Cost: 1})
}
