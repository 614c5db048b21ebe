package testbed

import (
	"context"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// StartCluster starts a cluster for t on a fresh, migrated database
// (teststore.PostgresURL, so Start's `migrate up` finds nothing to apply)
// and a Redis key prefix of its own (testenv.Redis);
// the binaries (built without the race detector: these clusters are
// measured under load, latency and exact counts, which a race-instrumented
// build on a small machine distorts; the race detector covers the same code
// in cmd/proxy's end-to-end tests and the package tests), the database and
// the Redis fields are filled in. The test binary's TestMain must call
// binaries.Remove at its end. The cluster stops at cleanup, failing t when a replica does not exit
// with status 0; a failed test logs the end of every replica's output.
func StartCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	opts.Binaries = binaries.ForTest(t, false)
	opts.DatabaseURL = teststore.PostgresURL(t)
	opts.RedisURL, opts.RedisKeyPrefix = testenv.Redis(t)
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range c.Replicas {
				logs := r.Logs()
				if len(logs) > 6000 {
					logs = "..." + logs[len(logs)-6000:]
				}
				t.Logf("replica %d output (end):\n%s", r.Index, logs)
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}
