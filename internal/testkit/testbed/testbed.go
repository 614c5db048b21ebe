// Package testbed runs a multi-replica cluster on one machine for tests and
// for trying the proxy locally: the mock upstream, `migrate up`, N proxy
// replicas with DATABASE_AUTO_MIGRATE=false on PostgreSQL and Redis, and a
// round-robin load balancer in front. PostgreSQL and Redis are reached
// through fault-injecting TCP forwarders, so a test can take either away.
//
// The package is for tests and tools; product binaries never import it.
package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/testbed/faultproxy"
	"github.com/llmproxy/llm-proxy/internal/testkit/testbed/lb"
	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

// Fixed credentials of a test bed cluster. They protect nothing: the
// cluster listens on 127.0.0.1 only and lives for one test or session.
const (
	// ManagementToken is every replica's MANAGEMENT_TOKEN.
	ManagementToken = "testbed-management-token"
	// EncryptionKey is every replica's ENCRYPTION_KEY (base64 of 32 bytes).
	EncryptionKey = "dGVzdGJlZC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcyE="
	// UpstreamKey is the mock upstream's API key, stored in every project
	// CreateProject makes.
	UpstreamKey = "sk-testbed-upstream-key"
)

// Options configure a cluster.
type Options struct {
	// Binaries are the proxy and migrate binaries to run (binaries.Build).
	Binaries binaries.Set
	// DatabaseURL is an empty PostgreSQL database (postgres://...). The
	// test bed connects to it directly; migrate and the replicas go
	// through the Postgres forwarder.
	DatabaseURL string
	// RedisURL is the Redis server (redis://...), reached through the Redis
	// forwarder; empty runs the replicas without Redis.
	RedisURL string
	// RedisKeyPrefix is every replica's REDIS_KEY_PREFIX.
	RedisKeyPrefix string
	// Replicas is the number of proxy processes (default 3).
	Replicas int
	// Env is added to every replica's environment (KEY=value) and
	// overrides the defaults.
	Env []string
	// ReplicaAddrs are the replicas' listen addresses (default
	// 127.0.0.1:0 each).
	ReplicaAddrs []string
	// LBAddr is the load balancer's listen address (default 127.0.0.1:0).
	LBAddr string
	// UpstreamAddr is the mock upstream's listen address (default
	// 127.0.0.1:0).
	UpstreamAddr string
	// Upstream configures the mock upstream; Key is always UpstreamKey.
	Upstream upstream.Options
	// Logs, when set, receives every line migrate and the replicas print,
	// prefixed with the process name.
	Logs io.Writer
	// Logger receives the load balancer's backend state changes.
	Logger *slog.Logger
}

// Cluster is a running test bed. Close stops it.
type Cluster struct {
	// URL is the load balancer (http://127.0.0.1:port): the cluster's
	// front door.
	URL string
	// Replicas are the proxy processes, in start order.
	Replicas []*Replica
	// LB is the load balancer.
	LB *lb.Balancer
	// Upstream is the mock provider every project created by CreateProject
	// points at.
	Upstream *upstream.Server
	// Postgres sits between the replicas and PostgreSQL.
	Postgres *faultproxy.Proxy
	// Redis sits between the replicas and Redis (nil without RedisURL).
	Redis *faultproxy.Proxy
	// DB is a direct connection pool to the database (not through the
	// forwarder), for assertions.
	DB *pgxpool.Pool

	client *http.Client
	logs   *lineWriter
}

// Start runs a cluster: upstream, forwarders, `migrate up`, the replicas
// (waiting until each listens) and the load balancer (after its first health
// check). On error everything started so far is stopped.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 3
	}
	if opts.DatabaseURL == "" {
		return nil, errors.New("testbed: Options.DatabaseURL is required")
	}
	if len(opts.ReplicaAddrs) != 0 && len(opts.ReplicaAddrs) != opts.Replicas {
		return nil, fmt.Errorf("testbed: %d replica addresses for %d replicas", len(opts.ReplicaAddrs), opts.Replicas)
	}
	c = &Cluster{
		client: &http.Client{Timeout: 30 * time.Second},
	}
	if opts.Logs != nil {
		c.logs = &lineWriter{w: opts.Logs}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
			c = nil
		}
	}()
	upOpts := opts.Upstream
	upOpts.Key = UpstreamKey
	if c.Upstream, err = upstream.Start(orDefault(opts.UpstreamAddr, "127.0.0.1:0"), upOpts); err != nil {
		return c, fmt.Errorf("start upstream: %w", err)
	}
	dbURL, err := c.forward(opts.DatabaseURL, &c.Postgres)
	if err != nil {
		return c, fmt.Errorf("DatabaseURL: %w", err)
	}
	var redisURL string
	if opts.RedisURL != "" {
		if redisURL, err = c.forward(opts.RedisURL, &c.Redis); err != nil {
			return c, fmt.Errorf("RedisURL: %w", err)
		}
	}
	if c.DB, err = pgxpool.New(ctx, opts.DatabaseURL); err != nil {
		return c, fmt.Errorf("connect to the database: %w", err)
	}
	if err := c.migrate(ctx, opts.Binaries.Migrate, dbURL); err != nil {
		return c, err
	}

	env := []string{
		"DATABASE_URL=" + dbURL,
		"DATABASE_AUTO_MIGRATE=false",
		"ENCRYPTION_KEY=" + EncryptionKey,
		"MANAGEMENT_TOKEN=" + ManagementToken,
		"LOG_FORMAT=json",
		"DRAIN_DELAY=1s",
		"USAGE_FLUSH_INTERVAL=200ms",
		"AUTH_CACHE_TTL=5s",
		// Several replicas, the load balancer, the forwarders and the test's
		// own load share a small test machine, so a Redis answer can take
		// longer than the 50 ms production default for reasons that have
		// nothing to do with Redis. Tests about exactness use this bound;
		// the Redis outage tests set the production default.
		"REDIS_TIMEOUT=1s",
	}
	if redisURL != "" {
		env = append(env, "REDIS_URL="+redisURL, "REDIS_KEY_PREFIX="+opts.RedisKeyPrefix)
	}
	for i := range opts.Replicas {
		addr := "127.0.0.1:0"
		if len(opts.ReplicaAddrs) > 0 {
			addr = opts.ReplicaAddrs[i]
		}
		r, err := startReplica(i, opts.Binaries.Proxy, slices.Concat(env, []string{"LISTEN_ADDR=" + addr}, opts.Env), c.logs)
		if err != nil {
			return c, err
		}
		c.Replicas = append(c.Replicas, r)
	}
	backends := make([]string, len(c.Replicas))
	for i, r := range c.Replicas {
		if err := r.waitListening(ctx, 2*time.Minute); err != nil {
			return c, err
		}
		backends[i] = r.URL
	}
	c.LB, err = lb.Start(orDefault(opts.LBAddr, "127.0.0.1:0"), lb.Options{Backends: backends, Logger: opts.Logger})
	if err != nil {
		return c, fmt.Errorf("start load balancer: %w", err)
	}
	c.URL = c.LB.URL
	return c, nil
}

// forward starts a forwarder to rawURL's host and returns rawURL pointed at
// the forwarder.
func (c *Cluster) forward(rawURL string, fp **faultproxy.Proxy) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse URL: %w", err)
	}
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = map[string]string{"postgres": "5432", "postgresql": "5432", "redis": "6379", "rediss": "6379"}[u.Scheme]
	}
	p, err := faultproxy.New(net.JoinHostPort(host, port))
	if err != nil {
		return "", err
	}
	*fp = p
	u.Host = p.Addr()
	return u.String(), nil
}

func (c *Cluster) migrate(ctx context.Context, bin, dbURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "up")
	cmd.Env = []string{"DATABASE_URL=" + dbURL, "LOG_FORMAT=json"}
	out, err := cmd.CombinedOutput()
	c.logs.write("migrate", out)
	if err != nil {
		return fmt.Errorf("migrate up: %w\n%s", err, out)
	}
	return nil
}

// Close stops the load balancer, then every replica (SIGTERM, in parallel,
// so they drain and flush usage while the database is still reachable),
// then the forwarders and the upstream. It reports replicas that did not
// exit with status 0.
func (c *Cluster) Close() error {
	var errs []error
	if c.LB != nil {
		errs = append(errs, c.LB.Close())
	}
	stopErrs := make([]error, len(c.Replicas))
	var wg sync.WaitGroup
	for i, r := range c.Replicas {
		wg.Go(func() { stopErrs[i] = r.Stop() })
	}
	wg.Wait()
	errs = append(errs, stopErrs...)
	for _, p := range []*faultproxy.Proxy{c.Postgres, c.Redis} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	if c.Upstream != nil {
		errs = append(errs, c.Upstream.Close())
	}
	if c.DB != nil {
		c.DB.Close()
	}
	return errors.Join(errs...)
}

// Manage calls the management API at base (the LB's or a replica's URL):
// body, when not nil, is sent as JSON and a JSON answer is decoded into
// out, when not nil. It returns the HTTP status.
func (c *Cluster) Manage(ctx context.Context, base, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("encode body: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+"/manage"+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+ManagementToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if out != nil && len(raw) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode %q: %w", method, path, raw, err)
		}
	}
	return resp.StatusCode, nil
}

// CreateProject creates an OpenAI-style project whose upstream is the mock
// and returns its ID.
func (c *Cluster) CreateProject(ctx context.Context, name string) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	body := map[string]any{"name": name, "provider": "openai", "base_url": c.Upstream.URL + "/v1", "api_key": UpstreamKey}
	code, err := c.Manage(ctx, c.URL, http.MethodPost, "/projects", body, &out)
	if err != nil {
		return "", fmt.Errorf("create project: %w", err)
	}
	if code != http.StatusCreated || out.ID == "" {
		return "", fmt.Errorf("create project: status %d", code)
	}
	return out.ID, nil
}

// TokenOptions describe a token to create; zero limits mean unlimited.
type TokenOptions struct {
	ProjectID       string
	DurationMinutes int
	MaxRequests     int64
	RPMLimit        int64
	TPMLimit        int64
}

// Token is a created token: its ID and its secret (sk-...).
type Token struct {
	ID     string
	Secret string
}

// CreateToken creates a token (valid DurationMinutes, default 60).
func (c *Cluster) CreateToken(ctx context.Context, o TokenOptions) (Token, error) {
	minutes := o.DurationMinutes
	if minutes <= 0 {
		minutes = 60
	}
	body := map[string]any{"project_id": o.ProjectID, "duration_minutes": minutes}
	for k, v := range map[string]int64{"max_requests": o.MaxRequests, "rpm_limit": o.RPMLimit, "tpm_limit": o.TPMLimit} {
		if v > 0 {
			body[k] = v
		}
	}
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	code, err := c.Manage(ctx, c.URL, http.MethodPost, "/tokens", body, &out)
	if err != nil {
		return Token{}, fmt.Errorf("create token: %w", err)
	}
	if code != http.StatusCreated || out.Token == "" {
		return Token{}, fmt.Errorf("create token: status %d", code)
	}
	return Token{ID: out.ID, Secret: out.Token}, nil
}

// CountUsage returns the number of usage rows with the given HTTP status
// (every row when status is 0).
func (c *Cluster) CountUsage(ctx context.Context, status int) (int64, error) {
	var n int64
	err := c.DB.QueryRow(ctx, "SELECT count(*) FROM usage WHERE $1 = 0 OR status = $1", status).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count usage rows: %w", err)
	}
	return n, nil
}

// Readiness is a replica's answer to /readyz: the status code and the body,
// which names each dependency's state under its name and the overall one
// under "status".
type Readiness struct {
	Code int
	Body map[string]string
}

// Ready calls /readyz on replica r.
func (c *Cluster) Ready(ctx context.Context, r *Replica) (Readiness, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/readyz", nil)
	if err != nil {
		return Readiness{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return Readiness{}, fmt.Errorf("replica %d /readyz: %w", r.Index, err)
	}
	defer resp.Body.Close()
	out := Readiness{Code: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&out.Body); err != nil {
		return out, fmt.Errorf("replica %d /readyz: decode the body: %w", r.Index, err)
	}
	return out, nil
}

// Replica is one running proxy process.
type Replica struct {
	// Index is the replica's position in Cluster.Replicas.
	Index int
	// URL is the replica's address (http://127.0.0.1:port) once listening.
	URL string

	cmd       *exec.Cmd
	output    *tailBuffer
	listening chan string
	done      chan struct{}
	err       error
	pipes     sync.WaitGroup
}

func startReplica(i int, bin string, env []string, logs *lineWriter) (*Replica, error) {
	r := &Replica{Index: i, output: &tailBuffer{}, listening: make(chan string, 1), done: make(chan struct{})}
	r.cmd = exec.Command(bin)
	r.cmd.Env = env
	// Own process group: a Ctrl-C at the terminal reaches the test bed,
	// which stops the replicas in order; the kernel kills them if the test
	// bed dies first.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start replica %d: %w", i, err)
	}
	name := fmt.Sprintf("replica-%d", i)
	r.pipes.Add(2)
	go r.scan(stdout, name, logs)
	go r.scan(stderr, name, logs)
	go func() {
		r.pipes.Wait()
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

// scan copies the process's output lines and spots the "listening" line.
func (r *Replica) scan(rd io.Reader, name string, logs *lineWriter) {
	defer r.pipes.Done()
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		r.output.WriteLine(line)
		logs.write(name, line)
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
			select {
			case r.listening <- rec.Addr:
			default:
			}
		}
	}
	_, _ = io.Copy(io.Discard, rd)
}

func (r *Replica) waitListening(ctx context.Context, timeout time.Duration) error {
	select {
	case addr := <-r.listening:
		r.URL = "http://" + addr
		return nil
	case <-r.done:
		return fmt.Errorf("replica %d exited during start-up: %v\n%s", r.Index, r.err, r.output.String())
	case <-ctx.Done():
		return fmt.Errorf("replica %d start-up: %w", r.Index, ctx.Err())
	case <-time.After(timeout):
		return fmt.Errorf("replica %d did not listen within %s:\n%s", r.Index, timeout, r.output.String())
	}
}

// Terminate sends SIGTERM without waiting (see Done and ExitCode).
func (r *Replica) Terminate() error {
	return r.cmd.Process.Signal(syscall.SIGTERM)
}

// Done is closed when the process has exited.
func (r *Replica) Done() <-chan struct{} { return r.done }

// ExitCode waits for the process to exit and returns its status (-1 when a
// signal killed it).
func (r *Replica) ExitCode() int {
	<-r.done
	return r.cmd.ProcessState.ExitCode()
}

// Logs returns the process's recent output (the last few MiB).
func (r *Replica) Logs() string { return r.output.String() }

// Stop sends SIGTERM and waits for the exit (killing the process after a
// minute). It returns an error unless the process exited with status 0;
// stopping an exited replica returns how it exited.
func (r *Replica) Stop() error {
	select {
	case <-r.done:
	default:
		_ = r.Terminate()
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			_ = r.cmd.Process.Kill()
			<-r.done
			return fmt.Errorf("replica %d did not stop within a minute after SIGTERM", r.Index)
		}
	}
	if r.err != nil {
		return fmt.Errorf("replica %d: %w", r.Index, r.err)
	}
	return nil
}

// tailBuffer keeps the last few MiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 4 << 20

// WriteLine appends line and a newline.
func (b *tailBuffer) WriteLine(line []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(append(b.buf, line...), '\n')
	if len(b.buf) > 2*tailMax {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-tailMax:]...)
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// lineWriter writes whole prefixed lines to a writer shared by several
// processes' output readers.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) write(name string, text []byte) {
	if lw == nil {
		return
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for line := range bytes.Lines(text) {
		fmt.Fprintf(lw.w, "[%s] %s\n", name, bytes.TrimRight(line, "\n"))
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
