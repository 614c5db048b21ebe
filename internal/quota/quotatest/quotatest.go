// Package quotatest is the conformance suite every quota.Counter must pass.
// Every test uses tokens of its own, so several runs can share one store or
// Redis server.
package quotatest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Run runs the suite. newCounter returns the Counter under test (called
// once per subtest); newToken returns a new token with MaxRequests maxRequests and
// RequestCount count, existing wherever the counter reads tokens from. Both
// own their cleanup through t.
func Run(t *testing.T, newCounter func(t *testing.T) quota.Counter, newToken func(t *testing.T, maxRequests, count int64) *store.Token) {
	tests := []struct {
		name string
		fn   func(*testing.T, quota.Counter, func(t *testing.T, maxRequests, count int64) *store.Token)
	}{
		{"ExactUnderConcurrency", testExact},
		{"SeededFromRequestCount", testSeeded},
		{"ZeroQuota", testZero},
		{"TokensIndependent", testIndependent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newCounter(t), newToken)
		})
	}
}

// consumeAll makes attempts Consume calls from workers goroutines and
// returns how many were admitted; every refusal must be ErrQuotaExceeded.
func consumeAll(t *testing.T, c quota.Counter, tok *store.Token, attempts, workers int64) int64 {
	t.Helper()
	var admitted, next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= attempts {
				err := c.Consume(context.Background(), tok)
				switch {
				case err == nil:
					admitted.Add(1)
				case !errors.Is(err, store.ErrQuotaExceeded):
					t.Errorf("Consume: %v, want nil or ErrQuotaExceeded", err)
				}
			}
		})
	}
	wg.Wait()
	return admitted.Load()
}

func mustExceed(t *testing.T, c quota.Counter, tok *store.Token) {
	t.Helper()
	if err := c.Consume(context.Background(), tok); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("Consume on a used-up quota = %v, want ErrQuotaExceeded", err)
	}
}

func testExact(t *testing.T, c quota.Counter, newToken func(*testing.T, int64, int64) *store.Token) {
	tok := newToken(t, 100, 0)
	if got := consumeAll(t, c, tok, 256, 64); got != 100 {
		t.Fatalf("%d of 256 concurrent requests admitted, want exactly 100", got)
	}
	mustExceed(t, c, tok)
}

func testSeeded(t *testing.T, c quota.Counter, newToken func(*testing.T, int64, int64) *store.Token) {
	tok := newToken(t, 100, 95)
	if got := consumeAll(t, c, tok, 20, 4); got != 5 {
		t.Fatalf("%d requests admitted on a token at 95 of 100, want 5", got)
	}
	mustExceed(t, c, tok)
}

func testZero(t *testing.T, c quota.Counter, newToken func(*testing.T, int64, int64) *store.Token) {
	mustExceed(t, c, newToken(t, 0, 0))
}

func testIndependent(t *testing.T, c quota.Counter, newToken func(*testing.T, int64, int64) *store.Token) {
	a, b := newToken(t, 3, 0), newToken(t, 3, 0)
	if got := consumeAll(t, c, a, 5, 1); got != 3 {
		t.Fatalf("%d admitted on token a, want 3", got)
	}
	mustExceed(t, c, a)
	if got := consumeAll(t, c, b, 5, 1); got != 3 {
		t.Fatalf("%d admitted on token b after a was used up, want 3", got)
	}
}
