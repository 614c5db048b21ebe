// Command cluster runs a local multi-replica cluster for trying the proxy
// (see .ci/cluster, which also starts throwaway PostgreSQL and Redis): it
// builds the proxy and migrate binaries, runs `migrate up`, starts the
// replicas, a round-robin load balancer and a mock OpenAI upstream on fixed
// ports, creates a demo project and token, prints how to call it, and stops
// everything on Ctrl-C or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/llmproxy/llm-proxy/internal/testkit/testbed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "127.0.0.1:8080", "load balancer listen address")
		replicas    = fs.Int("replicas", 3, "number of proxy replicas")
		replicaPort = fs.Int("replica-port", 8081, "port of the first replica; the others follow")
		upstreamAdr = fs.String("upstream-addr", "127.0.0.1:8090", "mock upstream listen address")
		databaseURL = fs.String("database-url", "", "PostgreSQL `URL` (required; migrated with migrate up)")
		redisURL    = fs.String("redis-url", "", "Redis `URL` (empty: replicas run without Redis)")
		redisPrefix = fs.String("redis-key-prefix", "llmproxy:", "REDIS_KEY_PREFIX of every replica")
		verbose     = fs.Bool("v", false, "print every replica's log lines")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *databaseURL == "" {
		return errors.New("--database-url is required")
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	replicaAddrs := make([]string, *replicas)
	for i := range replicaAddrs {
		replicaAddrs[i] = net.JoinHostPort(host, strconv.Itoa(*replicaPort+i))
	}

	dir, err := os.MkdirTemp("", "llmproxy-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(stderr, "building proxy and migrate ...")
	bins, err := testbed.Build(ctx, dir, false)
	if err != nil {
		return err
	}
	opts := testbed.Options{
		Binaries: bins, DatabaseURL: *databaseURL, RedisURL: *redisURL, RedisKeyPrefix: *redisPrefix,
		Replicas: *replicas, ReplicaAddrs: replicaAddrs, LBAddr: *addr, UpstreamAddr: *upstreamAdr,
	}
	if *verbose {
		opts.Logs = stderr
	}
	fmt.Fprintf(stderr, "starting migrate up, %d replicas, load balancer and mock upstream ...\n", *replicas)
	c, err := testbed.Start(ctx, opts)
	if err != nil {
		return err
	}
	err = demo(ctx, c, stdout)
	if err == nil {
		<-ctx.Done()
		fmt.Fprintln(stderr, "stopping ...")
	}
	return errors.Join(err, c.Close())
}

// demo creates a project and a token and prints how to use them.
func demo(ctx context.Context, c *testbed.Cluster, w io.Writer) error {
	projectID, err := c.CreateProject(ctx, "demo")
	if err != nil {
		return err
	}
	tok, err := c.CreateToken(ctx, testbed.TokenOptions{ProjectID: projectID, DurationMinutes: 24 * 60})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\ncluster ready\n  load balancer  %s\n", c.URL)
	for _, r := range c.Replicas {
		fmt.Fprintf(w, "  replica %d      %s\n", r.Index, r.URL)
	}
	fmt.Fprintf(w, "  mock upstream  %s/v1 (project %q, id %s)\n", c.Upstream.URL, "demo", projectID)
	fmt.Fprintf(w, "  management     Authorization: Bearer %s\n\n", testbed.ManagementToken)
	fmt.Fprintf(w, "Call it through the load balancer (token valid for 24 hours):\n\n")
	fmt.Fprintf(w, "  curl -s %s/v1/chat/completions \\\n    -H 'Authorization: Bearer %s' \\\n"+
		"    -H 'Content-Type: application/json' \\\n    -d '{\"model\":\"mock-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}'\n\n",
		c.URL, tok.Secret)
	fmt.Fprintf(w, "  curl -s %s/manage/usage -H 'Authorization: Bearer %s'\n\n", c.URL, testbed.ManagementToken)
	fmt.Fprintln(w, "Ctrl-C stops everything.")
	return nil
}
