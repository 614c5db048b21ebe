package ratelimit_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/ratelimit/limitertest"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	limitertest.Run(t, func(*testing.T) ratelimit.Limiter { return ratelimit.NewMemory() })
}

// BenchmarkMemoryAllow measures the hot path: the four checks of one proxied
// request (token and project, requests and tokens per minute) over many
// tokens, with limits high enough that every call is admitted.
func BenchmarkMemoryAllow(b *testing.B) {
	const tokens = 1024
	m := ratelimit.NewMemory()
	reqs := make([][]ratelimit.Request, tokens)
	for i := range reqs {
		id := strconv.Itoa(i)
		reqs[i] = []ratelimit.Request{
			{Key: "tok:" + id + ":rpm", Limit: 1 << 40, Cost: 1},
			{Key: "tok:" + id + ":tpm", Limit: 1 << 40, Cost: 500},
			{Key: "prj:" + strconv.Itoa(i%8) + ":rpm", Limit: 1 << 40, Cost: 1},
			{Key: "prj:" + strconv.Itoa(i%8) + ":tpm", Limit: 1 << 40, Cost: 500},
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d, err := m.Allow(ctx, reqs[i%tokens]...)
			if err != nil || !d.Allowed {
				b.Fatalf("Allow = %+v, %v", d, err)
			}
			i++
		}
	})
}
