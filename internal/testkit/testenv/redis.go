package testenv

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// RedisClient returns a client of the test Redis with context deadlines
// enabled, closed at cleanup, and a key prefix of the test's own.
func RedisClient(t testing.TB) (*redis.Client, string) {
	t.Helper()
	u, prefix := Redis(t)
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("parse TEST_REDIS_URL: %v", err)
	}
	opt.ContextTimeoutEnabled = true
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c, prefix
}

// CommandCounter is a go-redis hook that counts the commands a client
// sends (each command of a pipeline counts), for round-trip budgets.
type CommandCounter struct{ n atomic.Int64 }

// Count returns the commands sent since the last Reset.
func (h *CommandCounter) Count() int64 { return h.n.Load() }

// Reset sets the count to zero.
func (h *CommandCounter) Reset() { h.n.Store(0) }

// DialHook implements redis.Hook.
func (h *CommandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *CommandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *CommandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}
