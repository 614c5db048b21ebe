// Command bench runs the project's benchmark (SPEC §10; `make bench`):
// a mock OpenAI upstream, a plain reverse-proxy baseline and the proxy on
// SQLite and on PostgreSQL + Redis, each its own process on 127.0.0.1,
// driven by a closed-loop load generator. It prints one Markdown table with
// the targets of the performance issue beside the figures, and exits
// non-zero only when it could not measure (never for a missed target).
//
// Set-up (b) needs BENCH_DATABASE_URL (used as is) or TEST_DATABASE_URL (a
// fresh database is created and dropped), and BENCH_REDIS_URL or
// TEST_REDIS_URL; without them it is skipped with a note.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run parses the flags, takes set-up (b)'s servers from getenv and runs the
// benchmark, writing the report to stdout and progress to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := bench.Config{Out: stdout, Log: stderr}
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of each measured run")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "warm-up per target before measuring")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "interleaved rounds per scenario (medians are reported)")
	fs.DurationVar(&cfg.Soak, "soak", time.Minute, "RSS soak of set-up (a); 0 turns it off; shortened to fit -budget")
	fs.DurationVar(&cfg.Budget, "budget", 5*time.Minute, "wall-time budget of the whole run")
	fs.IntVar(&cfg.Chunks, "chunks", 20, "content events per upstream stream")
	fs.DurationVar(&cfg.EventGap, "gap", 5*time.Millisecond, "pause between upstream events in the gaps scenario")
	fs.BoolVar(&cfg.SkipCluster, "skip-cluster", false, "skip set-up (b) PostgreSQL + Redis")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	first := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	cfg.DatabaseURL = getenv("BENCH_DATABASE_URL")
	cfg.AdminDatabaseURL = getenv("TEST_DATABASE_URL")
	cfg.RedisURL = first("BENCH_REDIS_URL", "TEST_REDIS_URL")
	return bench.Run(ctx, cfg)
}
