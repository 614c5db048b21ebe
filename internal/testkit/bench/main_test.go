package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
)

// The benchmark's flags (make bench passes them after -args).
var (
	runBench    = flag.Bool("bench.run", false, "run the benchmark (TestBench; make bench)")
	duration    = flag.Duration("duration", 3*time.Second, "length of each measured run")
	warmup      = flag.Duration("warmup", time.Second, "warm-up per target before measuring")
	rounds      = flag.Int("rounds", 3, "interleaved rounds per scenario (medians are reported)")
	soak        = flag.Duration("soak", time.Minute, "RSS soak of set-up (a); 0 turns it off; shortened to fit -budget")
	only        = flag.String("scenarios", "", "comma-separated scenario names to measure (e.g. 'stream c=32'); empty: all")
	soakOnly    = flag.Bool("soak-only", false, "measure only the soak and the start-up (make bench-soak)")
	budget      = flag.Duration("budget", 5*time.Minute, "wall-time budget of the whole run")
	chunks      = flag.Int("chunks", 20, "content events per upstream stream")
	gap         = flag.Duration("gap", 5*time.Millisecond, "pause between upstream events in the gaps scenario")
	skipCluster = flag.Bool("skip-cluster", false, "skip set-up (b) PostgreSQL + Redis")
)

// TestMain runs the tests, or serves the helper named by
// LLMPROXY_BENCH_HELPER when the benchmark started this binary as one.
func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := serveHelper(ctx, role, os.Args[1:], os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
			os.Exit(1)
		}
		return
	}
	m.Run()
	if err := binaries.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// TestBench is the benchmark (SPEC §10; `make bench`), run only with
// -bench.run: a mock OpenAI upstream, a plain reverse-proxy baseline and
// the proxy on SQLite and on PostgreSQL + Redis, each its own process on
// 127.0.0.1, driven by a closed-loop load generator. It prints one Markdown
// table with the targets of the performance issue beside the figures on
// stdout, and fails only when it could not measure (never for a missed
// target).
//
// Set-up (b) needs BENCH_DATABASE_URL (used as is) or TEST_DATABASE_URL (a
// fresh database is created and dropped), and BENCH_REDIS_URL or
// TEST_REDIS_URL; without them it is skipped with a note.
func TestBench(t *testing.T) {
	if !*runBench {
		t.Skip("the benchmark runs with -bench.run (make bench)")
	}
	ctx, stop := signal.NotifyContext(t.Context(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// This process is the instrument (the load generator): its own garbage
	// collections would stall every target's requests alike and put a floor
	// under every p99, so it collects rarely. Its memory is not measured.
	defer debug.SetGCPercent(debug.SetGCPercent(1000))
	redisURL := os.Getenv("BENCH_REDIS_URL")
	if redisURL == "" {
		redisURL = os.Getenv("TEST_REDIS_URL")
	}
	scenarios, err := Select(DefaultScenarios(*gap), *only)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(ctx, Config{Scenarios: scenarios,
		Duration: *duration, Warmup: *warmup, Rounds: *rounds, Soak: *soak, SoakOnly: *soakOnly, Budget: *budget,
		Chunks: *chunks, EventGap: *gap, SkipCluster: *skipCluster,
		DatabaseURL: os.Getenv("BENCH_DATABASE_URL"), AdminDatabaseURL: os.Getenv("TEST_DATABASE_URL"), RedisURL: redisURL,
		Out: os.Stdout, Log: os.Stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
}
