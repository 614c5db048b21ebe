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

// Tokens makes and changes the tokens the suite counts against, wherever
// the counter reads them from. Both functions own their cleanup through t.
type Tokens struct {
	// New returns a new token with MaxRequests maxRequests and
	// RequestCount count.
	New func(t *testing.T, maxRequests, count int64) *store.Token
	// SetMax changes the token's max_requests, as PATCH does, and sets
	// tok.MaxRequests to match.
	SetMax func(t *testing.T, tok *store.Token, maxRequests int64)
}

// Run runs the suite. newCounter returns the Counter under test (called
// once per subtest).
func Run(t *testing.T, newCounter func(t *testing.T) quota.Counter, tokens Tokens) {
	tests := []struct {
		name string
		fn   func(*testing.T, quota.Counter, Tokens)
	}{
		{"ExactUnderConcurrency", testExact},
		{"SeededFromRequestCount", testSeeded},
		{"ZeroQuota", testZero},
		{"NoQuota", testNoQuota},
		{"TokensIndependent", testIndependent},
		{"LoweredQuota", testLowered},
		{"RaisedQuota", testRaised},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newCounter(t), tokens)
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

func testExact(t *testing.T, c quota.Counter, tokens Tokens) {
	tok := tokens.New(t, 100, 0)
	if got := consumeAll(t, c, tok, 256, 64); got != 100 {
		t.Fatalf("%d of 256 concurrent requests admitted, want exactly 100", got)
	}
	mustExceed(t, c, tok)
}

func testSeeded(t *testing.T, c quota.Counter, tokens Tokens) {
	tok := tokens.New(t, 100, 95)
	if got := consumeAll(t, c, tok, 20, 4); got != 5 {
		t.Fatalf("%d requests admitted on a token at 95 of 100, want 5", got)
	}
	mustExceed(t, c, tok)
}

func testZero(t *testing.T, c quota.Counter, tokens Tokens) {
	mustExceed(t, c, tokens.New(t, 0, 0))
}

// testNoQuota: a token without max_requests is admitted whatever its
// request_count, here past the quota it had before it was lifted.
func testNoQuota(t *testing.T, c quota.Counter, tokens Tokens) {
	tok := *tokens.New(t, 1, 1)
	tok.MaxRequests = nil
	for range 3 {
		if err := c.Consume(context.Background(), &tok); err != nil {
			t.Fatalf("Consume without max_requests: %v", err)
		}
	}
}

func testIndependent(t *testing.T, c quota.Counter, tokens Tokens) {
	a, b := tokens.New(t, 3, 0), tokens.New(t, 3, 0)
	if got := consumeAll(t, c, a, 5, 1); got != 3 {
		t.Fatalf("%d admitted on token a, want 3", got)
	}
	mustExceed(t, c, a)
	if got := consumeAll(t, c, b, 5, 1); got != 3 {
		t.Fatalf("%d admitted on token b after a was used up, want 3", got)
	}
}

// testLowered lowers max_requests after some use, as PATCH does: the new
// quota holds from the next request on, down to one below what was
// served.
func testLowered(t *testing.T, c quota.Counter, tokens Tokens) {
	tok := tokens.New(t, 100, 0)
	if got := consumeAll(t, c, tok, 5, 1); got != 5 {
		t.Fatalf("%d of the first 5 requests admitted, want 5", got)
	}
	tokens.SetMax(t, tok, 8)
	if got := consumeAll(t, c, tok, 20, 4); got != 3 {
		t.Fatalf("%d admitted after max_requests went from 100 to 8 at 5 served, want 3", got)
	}
	tokens.SetMax(t, tok, 4)
	mustExceed(t, c, tok)
}

// testRaised raises max_requests of a used-up token.
func testRaised(t *testing.T, c quota.Counter, tokens Tokens) {
	tok := tokens.New(t, 5, 0)
	if got := consumeAll(t, c, tok, 8, 2); got != 5 {
		t.Fatalf("%d of 8 requests admitted on a quota of 5, want 5", got)
	}
	tokens.SetMax(t, tok, 12)
	if got := consumeAll(t, c, tok, 20, 4); got != 7 {
		t.Fatalf("%d admitted after max_requests went from 5 to 12, want 7", got)
	}
	mustExceed(t, c, tok)
}
