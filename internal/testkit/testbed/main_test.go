package testbed_test

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
	"testing"

	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/testbed"
)

// The flags of -serve, which .ci/cluster passes on.
var (
	serve       = flag.Bool("serve", false, "serve a local cluster until SIGINT or SIGTERM instead of running the tests (.ci/cluster)")
	addr        = flag.String("addr", "127.0.0.1:8080", "-serve: load balancer listen address")
	replicas    = flag.Int("replicas", 3, "-serve: number of proxy replicas")
	replicaPort = flag.Int("replica-port", 8081, "-serve: port of the first replica; the others follow")
	upstreamAdr = flag.String("upstream-addr", "127.0.0.1:8090", "-serve: mock upstream listen address")
	databaseURL = flag.String("database-url", "", "-serve: PostgreSQL `URL` (required; migrated with migrate up)")
	redisURL    = flag.String("redis-url", "", "-serve: Redis `URL` (empty: replicas run without Redis)")
	redisPrefix = flag.String("redis-key-prefix", "llmproxy:", "-serve: REDIS_KEY_PREFIX of every replica")
	verbose     = flag.Bool("v", false, "-serve: print every replica's log lines")
)

// TestMain runs the tests, or with -serve a cluster to try by hand.
func TestMain(m *testing.M) {
	flag.Parse()
	if *serve {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := serveCluster(ctx, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster:", err)
			os.Exit(1)
		}
		return
	}
	m.Run()
	if err := binaries.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// serveCluster builds the proxy and migrate binaries, runs `migrate up`,
// starts the replicas, a round-robin load balancer and a mock OpenAI
// upstream on fixed ports, creates a demo project and token, prints how to
// call it, and stops everything when ctx ends.
func serveCluster(ctx context.Context, stdout, stderr io.Writer) (err error) {
	if *databaseURL == "" {
		return errors.New("-database-url is required")
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	replicaAddrs := make([]string, *replicas)
	for i := range replicaAddrs {
		replicaAddrs[i] = net.JoinHostPort(host, strconv.Itoa(*replicaPort+i))
	}
	fmt.Fprintln(stderr, "building proxy and migrate ...")
	bins, err := binaries.Build(ctx, false)
	defer func() { err = errors.Join(err, binaries.Remove()) }()
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
