package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/bench/baseline"
	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

// helperEnv names the helper server an executable of the benchmark (the
// test binary) serves instead of running: the benchmark starts itself again
// with it set for each helper (see startHelper).
const helperEnv = "LLMPROXY_BENCH_HELPER"

// The helper servers.
const (
	helperUpstream = "upstream" // the mock OpenAI upstream
	helperBaseline = "baseline" // the reference reverse proxy
)

// serveHelper serves the helper role on 127.0.0.1 until ctx ends. Its first
// line on stdout is "listening http://HOST:PORT". args are the role's flags:
// -api-key for both (the only key the upstream accepts, empty for any; the
// key the baseline sends), -chunks (the upstream's content events per
// stream) and -upstream (the baseline's upstream root URL).
func serveHelper(ctx context.Context, role string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	key := fs.String("api-key", "", "upstream API key")
	chunks := fs.Int("chunks", 20, "upstream: content events per stream")
	upstreamURL := fs.String("upstream", "", "baseline: upstream root URL (http://HOST:PORT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var h http.Handler
	switch role {
	case helperUpstream:
		h = upstream.New(upstream.Options{Key: *key, Chunks: *chunks})
	case helperBaseline:
		u, err := url.Parse(*upstreamURL)
		if err != nil || u.Host == "" {
			return errors.New("-upstream must be an absolute URL such as http://127.0.0.1:9000")
		}
		h = baseline.New(u, *key)
	default:
		return fmt.Errorf("%s=%q names no helper", helperEnv, role)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Like the proxy: no WriteTimeout, so streams are never cut.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	fmt.Fprintf(stdout, "listening http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	return err
}
