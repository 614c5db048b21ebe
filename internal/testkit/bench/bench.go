// Package bench is the project's benchmark harness (SPEC §10, `make
// bench`, which runs TestBench): it starts a mock OpenAI upstream, a plain
// httputil.ReverseProxy baseline and the proxy in two set-ups — (a) SQLite,
// (b) PostgreSQL + Redis — each as its own process (the upstream and the
// baseline are this executable started again as helpers), drives them with
// a closed-loop load generator in this process, and prints one Markdown
// table with the figures, the ratios against the baseline and the targets
// of the performance issue beside them. It is tooling only: the product
// binaries never import it.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

// Scenario is one load shape.
type Scenario struct {
	Name        string
	Stream      bool
	Concurrency int
	EventGap    time.Duration // pause between upstream SSE events
}

// The scenario names the goals refer to.
const (
	Chat1      = "chat c=1"
	Chat32     = "chat c=32"
	Chat64     = "chat c=64"
	Chat128    = "chat c=128"
	Stream32   = "stream c=32"
	StreamGaps = "stream c=32, gaps"
)

// DefaultScenarios are the load shapes of the performance issue.
func DefaultScenarios(gap time.Duration) []Scenario {
	return []Scenario{
		{Name: Chat1, Concurrency: 1},
		{Name: Chat32, Concurrency: 32},
		{Name: Chat64, Concurrency: 64},
		{Name: Chat128, Concurrency: 128},
		{Name: Stream32, Stream: true, Concurrency: 32},
		{Name: StreamGaps, Stream: true, Concurrency: 32, EventGap: gap},
	}
}

// Select returns the scenarios of all named in names (comma-separated), in
// all's order; all of them when names is empty.
func Select(all []Scenario, names string) ([]Scenario, error) {
	if strings.TrimSpace(names) == "" {
		return all, nil
	}
	want := map[string]bool{}
	for name := range strings.SplitSeq(names, ",") {
		name = strings.TrimSpace(name)
		if !slices.ContainsFunc(all, func(sc Scenario) bool { return sc.Name == name }) {
			return nil, fmt.Errorf("unknown scenario %q", name)
		}
		want[name] = true
	}
	return slices.DeleteFunc(slices.Clone(all), func(sc Scenario) bool { return !want[sc.Name] }), nil
}

// benchOrigin is the browser origin the policies target sends and allows.
const benchOrigin = "https://app.example.com"

// Startup names the row of the start-up measurement.
const Startup = "ready after start, existing SQLite"

// SoakScenario names the soak row for a soak of d.
func SoakScenario(d time.Duration) string {
	return fmt.Sprintf("soak: chat c=32, %s", d)
}

// Goals are the targets of the performance issues (SPEC §10), for a soak
// of d. Set-up (a)'s and (b)'s tokens carry every per-request check the
// targets name: project and token model allow-lists, requests/min and
// tokens/min limits and a max_requests quota.
func Goals(soak time.Duration) []Goal {
	rps := func(r Row) float64 { return r.RPSRatio }
	cpu := func(r Row) float64 { return r.CPURatio }
	rss := func(r Row) float64 { return r.Med.PeakRSS }
	return []Goal{
		{Scenario: Chat1, Key: KeyA, Label: "added p50", Op: "<=", Limit: 0.05, Unit: " ms", Value: func(r Row) float64 { return r.AddedP50 }},
		{Scenario: Chat32, Key: KeyA, Label: "req/s", Op: ">=", Limit: 1.3, Unit: "×", Value: rps},
		{Scenario: Chat32, Key: KeyA, Label: "CPU/req", Op: "<=", Limit: 0.65, Unit: "×", Value: cpu},
		{Scenario: Chat32, Key: KeyB, Label: "req/s", Op: ">=", Limit: 1.1, Unit: "×", Value: rps},
		{Scenario: Chat32, Key: KeyB, Label: "DB round trips/req", Op: "<=", Limit: 0.05, Value: func(r Row) float64 { return r.Med.DBPerReq }},
		{Scenario: Chat32, Key: KeyB, Label: "Redis round trips/req", Op: "<=", Limit: 1, Value: func(r Row) float64 { return r.RedisRoundTrips }},
		{Scenario: Chat64, Key: KeyA, Label: "p99", Op: "<=", Limit: 0.8, Unit: "×", Value: func(r Row) float64 { return r.P99Ratio }},
		{Scenario: Chat128, Key: KeyA, Label: "peak RSS", Op: "<=", Limit: 48, Unit: " MB", Value: rss},
		{Scenario: Chat128, Key: KeyB, Label: "peak RSS", Op: "<=", Limit: 48, Unit: " MB", Value: rss},
		{Scenario: Stream32, Key: KeyA, Label: "req/s", Op: ">=", Limit: 1.15, Unit: "×", Value: rps},
		{Scenario: Stream32, Key: KeyA, Label: "CPU/req", Op: "<=", Limit: 0.8, Unit: "×", Value: cpu},
		{Scenario: StreamGaps, Key: KeyA, Label: "added TTFB p50", Op: "<=", Limit: 0.5, Unit: " ms", Value: func(r Row) float64 { return r.AddedTTFB }},
		{Scenario: Startup, Key: KeyA, Label: "ready", Op: "<=", Limit: 300, Unit: " ms", Value: func(r Row) float64 { return r.Startup }},
		{Scenario: SoakScenario(soak), Key: KeyA, Label: "RSS last third / first third", Op: "<=", Limit: 1.05, Unit: "×",
			Value: func(r Row) float64 { return r.SoakGrowth }},
	}
}

// Config is one benchmark run. Zero fields take the defaults noted.
type Config struct {
	Duration  time.Duration // each measured run; default 3s
	Warmup    time.Duration // per target before measuring; default 1s
	Rounds    int           // interleaved rounds per scenario; default 3
	Soak      time.Duration // RSS soak of set-up (a); 0 turns it off; shortened to fit Budget
	SoakOnly  bool          // measure only the soak and the start-up, no scenario
	Budget    time.Duration // wall-time budget of the whole run; default 5m
	Chunks    int           // content events per stream; default 20
	EventGap  time.Duration // pause between events in the gaps scenario; default 5ms
	Scenarios []Scenario    // default DefaultScenarios(EventGap)

	// Set-up (b): DatabaseURL is used as is; otherwise AdminDatabaseURL's
	// server gets a fresh database, dropped afterwards. Without a database
	// or RedisURL, or with SkipCluster, set-up (b) is skipped.
	DatabaseURL, AdminDatabaseURL, RedisURL string
	SkipCluster                             bool

	Out io.Writer // the report; default io.Discard
	Log io.Writer // progress lines; default io.Discard
}

func (c *Config) defaults() {
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Budget <= 0 {
		c.Budget = 5 * time.Minute
	}
	if c.Chunks <= 0 {
		c.Chunks = 20
	}
	if c.EventGap <= 0 {
		c.EventGap = 5 * time.Millisecond
	}
	if c.Scenarios == nil {
		c.Scenarios = DefaultScenarios(c.EventGap)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// run is the state of one benchmark.
type run struct {
	cfg     Config
	start   time.Time
	dir     string
	proxy   string // the proxy binary
	self    string // this executable, which serves the helpers
	targets []*target
	procs   []*process
	cleanup []func(context.Context) error // run last first
	notes   []string
}

// Run executes the benchmark and writes the report to cfg.Out. It returns
// an error only when the harness could not measure (a build or start-up
// failure, or more than 1% failed requests in a row); a missed target is
// reported, not returned.
func Run(ctx context.Context, cfg Config) (err error) {
	cfg.defaults()
	r := &run{cfg: cfg, start: time.Now()}
	if r.dir, err = os.MkdirTemp("", "llmproxy-bench-"); err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer func() { err = errors.Join(err, r.teardown()) }()
	if err := r.setup(ctx); err != nil {
		return err
	}
	return r.measureAll(ctx)
}

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "[%5.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

// setup builds the proxy and starts the upstream and every target.
func (r *run) setup(ctx context.Context) error {
	r.logf("building the proxy")
	bins, err := binaries.Build(ctx, false)
	if err != nil {
		return err
	}
	r.proxy = bins.Proxy
	if r.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this executable, which serves the upstream and the baseline: %w", err)
	}

	b := &bodies{
		chat: requestBody(false, 500), stream: requestBody(true, 500),
		upstreamKey: "sk-bench-upstream-" + randomName(""), mgmtKey: randomName("mgmt-"),
	}
	ref := upstream.New(upstream.Options{Chunks: r.cfg.Chunks})
	b.minChat, b.minStream = ref.JSONSize()*9/10, ref.StreamSize(true)*9/10
	maxConc := 1
	for _, sc := range r.cfg.Scenarios {
		maxConc = max(maxConc, sc.Concurrency)
	}

	up, err := r.startHelper(helperUpstream, "-api-key", b.upstreamKey, "-chunks", fmt.Sprint(r.cfg.Chunks))
	if err != nil {
		return err
	}
	upURL, err := up.listenURL(10 * time.Second)
	if err != nil {
		return err
	}
	base, err := r.startHelper(helperBaseline, "-upstream", upURL, "-api-key", b.upstreamKey)
	if err != nil {
		return err
	}
	baseURL, err := base.listenURL(10 * time.Second)
	if err != nil {
		return err
	}
	r.targets = append(r.targets, &target{key: KeyBaseline, name: "baseline", proc: base, base: baseURL,
		auth: "Bearer sk-client-placeholder-of-the-same-length-000000", client: NewClient(maxConc), bodies: b})

	encKey := make([]byte, 32)
	_, _ = rand.Read(encKey)
	common := []string{"MANAGEMENT_TOKEN=" + b.mgmtKey, "LOG_LEVEL=warn", "DRAIN_DELAY=0s", "SHUTDOWN_GRACE=5s",
		"ENCRYPTION_KEY=" + base64.StdEncoding.EncodeToString(encKey)}
	// Memory is on for (a): requests without X-Session-ID (all but the
	// memory row's) skip it at no cost. So is SSO, with an agent token
	// issued before the start (the provider is only asked at sign-in).
	aPath := filepath.Join(r.dir, "a", "proxy.db")
	agentSecret, err := seedAgentToken(ctx, aPath)
	if err != nil {
		return err
	}
	a, err := r.startProxy(ctx, KeyA, "proxy (a) SQLite", b, maxConc, upURL, append(common,
		"DATABASE_URL=sqlite:///"+aPath, "MEMORY_ENABLED=true",
		"SSO_ISSUER=http://127.0.0.1:9/bench-issuer", "SSO_CLIENT_ID=bench", "SSO_PROJECT=bench-"+KeyAAgent,
		"PUBLIC_URL=http://127.0.0.1"))
	if err != nil {
		return err
	}
	r.targets = append(r.targets, a)
	// The policies of browser apps and the response cache, on (a)'s
	// process: the same request with an allowed Origin against an origin
	// list, and answered from the cache.
	pol, err := a.variant(ctx, KeyAPolicies, "proxy (a) + origins", upURL, map[string]any{
		"allowed_origins": []string{benchOrigin},
	}, http.Header{"Origin": {benchOrigin}})
	if err != nil {
		return err
	}
	hits, err := a.variant(ctx, KeyACache, "proxy (a) cache hits", upURL, map[string]any{"cache_ttl_seconds": 3600}, nil)
	if err != nil {
		return err
	}
	mem, err := a.variant(ctx, KeyAMemory, "proxy (a) + memory capture", upURL, nil,
		http.Header{"X-Session-Id": {"bench-session"}, "X-Project-Root": {"/bench/app"}})
	if err != nil {
		return err
	}
	agent, err := a.variant(ctx, KeyAAgent, "proxy (a) agent token", upURL, nil, nil)
	if err != nil {
		return err
	}
	agent.auth = "Bearer " + agentSecret
	// The variants are measured where their cost shows and the budget
	// allows: at c=32 (the cache: chat only, streams are never cached),
	// and memory and agent tokens at c=1 too, for the latency they add.
	pol.only = []string{Chat32, Stream32}
	hits.only = []string{Chat32}
	mem.only = []string{Chat1, Chat32, Stream32}
	agent.only = []string{Chat1, Chat32, Stream32}
	r.targets = append(r.targets, pol, hits, mem, agent)

	if err := r.startCluster(ctx, b, maxConc, upURL, common); err != nil {
		return err
	}
	for _, t := range r.targets {
		r.logf("warming up %s", t.name)
		for _, sc := range []Scenario{{Name: "warm-up chat", Concurrency: min(32, maxConc)}, {Name: "warm-up stream", Stream: true, Concurrency: min(32, maxConc)}} {
			res := RunLoad(ctx, t.client, t.load(sc, r.cfg.Warmup))
			if res.Errors > 0 || res.Requests == 0 {
				return fmt.Errorf("%s %s: %d of %d requests failed (first: %s)", t.name, sc.Name, res.Errors, res.Errors+res.Requests, res.FirstErr)
			}
		}
	}
	return ctx.Err()
}

// startCluster starts set-up (b) when PostgreSQL and Redis are configured.
func (r *run) startCluster(ctx context.Context, b *bodies, maxConc int, upURL string, common []string) error {
	if r.cfg.SkipCluster {
		r.notes = append(r.notes, "Set-up (b) PostgreSQL + Redis was skipped on request.")
		return nil
	}
	if (r.cfg.DatabaseURL == "" && r.cfg.AdminDatabaseURL == "") || r.cfg.RedisURL == "" {
		r.notes = append(r.notes, "Set-up (b) PostgreSQL + Redis was skipped: set BENCH_DATABASE_URL (used as is) or "+
			"TEST_DATABASE_URL (a fresh database is created), and BENCH_REDIS_URL or TEST_REDIS_URL.")
		return nil
	}
	dbURL := r.cfg.DatabaseURL
	if dbURL == "" {
		u, drop, err := createDatabase(ctx, r.cfg.AdminDatabaseURL)
		if err != nil {
			return err
		}
		r.cleanup = append(r.cleanup, drop)
		dbURL = u
	}
	prefix := randomName("bench_") + ":"
	probe, err := newRedisProbe(ctx, r.cfg.RedisURL, prefix)
	if err != nil {
		return err
	}
	r.cleanup = append(r.cleanup, probe.cleanup)
	t, err := r.startProxy(ctx, KeyB, "proxy (b) PostgreSQL + Redis", b, maxConc, upURL, append(common,
		"DATABASE_URL="+dbURL, "DATABASE_AUTO_MIGRATE=true", "REDIS_URL="+r.cfg.RedisURL, "REDIS_KEY_PREFIX="+prefix))
	if err != nil {
		return err
	}
	t.redis = probe
	if t.db, err = newDBProbe(ctx, dbURL); err != nil {
		return err
	}
	r.cleanup = append(r.cleanup, t.db.close)
	r.targets = append(r.targets, t)
	return nil
}

// startHelper starts this executable as the helper server role (see
// serveHelper), a process of its own so that its CPU and memory are not
// the proxy's or the load generator's.
func (r *run) startHelper(role string, args ...string) (*process, error) {
	p, err := startProcess(role, r.self, args, []string{helperEnv + "=" + role})
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	return p, nil
}

func (r *run) startProxy(ctx context.Context, key, name string, b *bodies, maxConc int, upURL string, env []string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	r.logf("starting %s on %s", name, addr)
	p, err := startProcess(name, r.proxy, nil, append(slices.Clone(env), "LISTEN_ADDR="+addr))
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	t := &target{key: key, name: name, proc: p, base: "http://" + addr, metrics: true, client: NewClient(maxConc), bodies: b}
	if err := p.waitReady(ctx, t.base+"/readyz", 60*time.Second); err != nil {
		return nil, err
	}
	if err := t.setupProxy(ctx, upURL); err != nil {
		return nil, err
	}
	return t, nil
}

// teardown stops every process and removes what the run created.
func (r *run) teardown() error {
	var errs []error
	for _, t := range r.targets {
		t.client.CloseIdleConnections()
	}
	for _, p := range slices.Backward(r.procs) {
		errs = append(errs, p.stop())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range slices.Backward(r.cleanup) {
		errs = append(errs, c(ctx))
	}
	errs = append(errs, os.RemoveAll(r.dir))
	return errors.Join(errs...)
}

// order is the targets of round i: forwards on even rounds, backwards on
// odd ones, so a linear drift during a scenario cancels out.
func order[T any](ts []T, i int) []T {
	if i%2 == 0 {
		return ts
	}
	return slices.Collect(func(yield func(T) bool) {
		for _, t := range slices.Backward(ts) {
			if !yield(t) {
				return
			}
		}
	})
}

// measureAll runs every scenario, the Redis count and the soak, and
// prints the report.
func (r *run) measureAll(ctx context.Context) error {
	loadStart := loadAvg()
	var rows []Row
	var invalid []string
	scenarios := r.cfg.Scenarios
	if r.cfg.SoakOnly {
		scenarios = nil
	}
	for _, sc := range scenarios {
		samples := map[string][]Sample{}
		for round := range r.cfg.Rounds {
			for _, t := range order(r.targets, round) {
				if !t.measures(sc) {
					continue
				}
				s, err := t.measure(ctx, sc, r.cfg.Duration)
				if err != nil {
					return err
				}
				r.logf("%-18s round %d/%d %-30s %7.0f req/s  p50 %.3f ms", sc.Name, round+1, r.cfg.Rounds, t.name, s.RPS, s.P50)
				samples[t.key] = append(samples[t.key], s)
			}
		}
		for _, t := range r.targets {
			if !t.measures(sc) {
				continue
			}
			var base []Sample
			if t.key != KeyBaseline {
				base = samples[KeyBaseline]
			}
			row := Summarize(sc.Name, t.key, t.name, samples[t.key], base)
			invalid = append(invalid, tooManyErrors(row)...)
			rows = append(rows, row)
		}
	}
	if err := r.countRedis(ctx, rows); err != nil {
		return err
	}
	soakRow, soak, err := r.soak(ctx)
	if err != nil {
		return err
	}
	if soakRow != nil {
		invalid = append(invalid, tooManyErrors(*soakRow)...)
		rows = append(rows, *soakRow)
	}
	startRow, err := r.startup(ctx)
	if err != nil {
		return err
	}
	rows = append(rows, startRow)
	Apply(rows, Goals(soak))
	if err := r.report(rows, loadStart); err != nil {
		return err
	}
	if len(invalid) > 0 {
		return fmt.Errorf("more than 1%% of the requests failed in %s; those figures are not valid", strings.Join(invalid, ", "))
	}
	return nil
}

// tooManyErrors names the row when more than 1% of its requests failed: a
// few failures under overload are reported in the table, more make the
// figures meaningless.
func tooManyErrors(r Row) []string {
	if r.Med.Errors*100 > r.Med.Requests+r.Med.Errors {
		return []string{r.Scenario + " / " + r.Setup}
	}
	return nil
}

// countRedis runs set-up (b) at chat c=32 once more with MONITOR on and
// stores the commands its own connections sent per request in the row.
func (r *run) countRedis(ctx context.Context, rows []Row) error {
	var t *target
	for _, x := range r.targets {
		if x.redis != nil {
			t = x
		}
	}
	i := slices.IndexFunc(rows, func(row Row) bool { return row.Key == KeyB && row.Scenario == Chat32 })
	if t == nil || i < 0 {
		return nil
	}
	mon, err := t.redis.startMonitor(ctx)
	if err != nil {
		r.notes = append(r.notes, fmt.Sprintf("Redis round trips were not counted: %v.", err))
		return nil
	}
	sc := r.cfg.Scenarios[slices.IndexFunc(r.cfg.Scenarios, func(s Scenario) bool { return s.Name == Chat32 })]
	res := RunLoad(ctx, t.client, t.load(sc, min(r.cfg.Duration, time.Second)))
	time.Sleep(100 * time.Millisecond) // let the MONITOR feed catch up
	counts := mon.stop()
	if res.Requests == 0 {
		return fmt.Errorf("%s Redis count run: no request succeeded (first: %s)", t.name, res.FirstErr)
	}
	n := float64(res.Requests)
	rows[i].RedisRoundTrips = float64(counts.Total()) / n
	r.notes = append(r.notes, fmt.Sprintf("Redis round trips of (b) chat c=32 come from a separate %d-request run with MONITOR "+
		"(not timed), counting the commands the proxy's own connections sent (a pipelined batch counts once per command): %s; "+
		"run inside Lua scripts on the proxy's keys: %s. The table's \"Redis cmd/req\" is the server-wide INFO "+
		"total_commands_processed delta per request (minus INFO itself), which also counts commands inside scripts and "+
		"those of any other client of that Redis.", res.Requests, perRequest(counts.Sent, n), perRequest(counts.InScript, n)))
	return nil
}

func perRequest(m map[string]int, n float64) string {
	if len(m) == 0 {
		return "none"
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %.2f", k, float64(m[k])/n)
	}
	return strings.Join(parts, ", ")
}

// teardownReserve is the part of the budget kept for stopping the servers
// and dropping the database.
const teardownReserve = 15 * time.Second

// soak runs set-up (a) at chat c=32 for the soak time left in the budget,
// sampling its RSS every second (ten times a second in a soak shorter than
// ten seconds, such as the smoke test's).
func (r *run) soak(ctx context.Context) (*Row, time.Duration, error) {
	want := r.cfg.Soak
	if want <= 0 {
		r.notes = append(r.notes, "The RSS soak was off (-soak 0).")
		return nil, 0, nil
	}
	left := (r.cfg.Budget - time.Since(r.start) - teardownReserve).Truncate(time.Second)
	d := min(want, left)
	if d < time.Second {
		r.notes = append(r.notes, fmt.Sprintf("The %s RSS soak was skipped: only %s of the %s budget was left.", want, max(left, 0), r.cfg.Budget))
		return nil, 0, nil
	}
	if d < want {
		r.notes = append(r.notes, fmt.Sprintf("The RSS soak was shortened from %s to %s to fit the %s budget.", want, d, r.cfg.Budget))
	}
	var a *target
	for _, t := range r.targets {
		if t.key == KeyA {
			a = t
		}
	}
	every := time.Second
	if d < 10*time.Second {
		every = 100 * time.Millisecond
	}
	name := SoakScenario(d)
	r.logf("%s on %s", name, a.name)
	sc := Scenario{Name: name, Concurrency: 32}
	stop := make(chan struct{})
	var rss []float64
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if m, err := ReadMemory(a.proc.pid()); err == nil {
					rss = append(rss, float64(m.RSS))
				}
			}
		}
	})
	s, err := a.measure(ctx, sc, d)
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, 0, err
	}
	row := Summarize(name, KeyA, a.name, []Sample{s}, nil)
	row.SoakGrowth = SoakGrowth(rss)
	r.notes = append(r.notes, fmt.Sprintf("Soak: RSS sampled every %s on (a); the target compares the mean of the last third (%.1f MB) with the first third (%.1f MB).",
		every, thirdMean(rss, false)/(1<<20), thirdMean(rss, true)/(1<<20)))
	return &row, d, nil
}

// startupRuns is how many times set-up (a) is restarted for the start-up
// figure (the median is reported).
const startupRuns = 3

// startup restarts set-up (a) on its database, by now holding the rows of
// the whole run, and measures from exec to the first 200 from /readyz,
// polled every millisecond.
func (r *run) startup(ctx context.Context) (Row, error) {
	var a *target
	for _, t := range r.targets {
		if t.key == KeyA {
			a = t
		}
	}
	r.logf("%s: restarting %s %d times", Startup, a.name, startupRuns)
	ms := make([]float64, 0, startupRuns)
	for range startupRuns {
		a.client.CloseIdleConnections()
		if err := a.proc.stop(); err != nil {
			return Row{}, err
		}
		begin := time.Now()
		p, err := startProcess(a.proc.name, a.proc.cmd.Path, nil, a.proc.cmd.Env)
		if err != nil {
			return Row{}, err
		}
		r.procs[slices.Index(r.procs, a.proc)] = p
		a.proc = p
		if err := p.pollReady(ctx, a.base+"/readyz", 30*time.Second, time.Millisecond); err != nil {
			return Row{}, err
		}
		ms = append(ms, float64(time.Since(begin).Microseconds())/1000)
	}
	row := Summarize(Startup, KeyA, a.name, nil, nil)
	row.Startup = Median(ms)
	r.notes = append(r.notes, fmt.Sprintf("Start-up: (a) stopped and started again %d times on its database after the run; "+
		"exec to the first 200 from /readyz (polled every 1 ms): %s ms; the target column shows the median.", startupRuns, joinFloats(ms)))
	return row, nil
}

func joinFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, ", ")
}

// SoakGrowth is the mean of the last third of the samples over the mean of
// the first third, NaN with fewer than three samples.
func SoakGrowth(samples []float64) float64 {
	if len(samples) < 3 {
		return math.NaN()
	}
	return thirdMean(samples, false) / thirdMean(samples, true)
}

func thirdMean(samples []float64, first bool) float64 {
	k := len(samples) / 3
	if k == 0 {
		return math.NaN()
	}
	part := samples[len(samples)-k:]
	if first {
		part = samples[:k]
	}
	var sum float64
	for _, x := range part {
		sum += x
	}
	return sum / float64(k)
}

// report prints the machine, the table and the notes.
func (r *run) report(rows []Row, loadStart string) error {
	w := r.cfg.Out
	c := r.cfg
	fmt.Fprintf(w, "## Benchmark (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "Machine: %s, %d cores, Linux %s, %s; load average %s at the start, %s at the end.\n",
		cpuModel(), runtime.NumCPU(), kernel(), runtime.Version(), loadStart, loadAvg())
	fmt.Fprintf(w, "Runs: %s each, %d rounds interleaved (baseline → (a) → (b), then reversed), closed loop on 127.0.0.1; "+
		"request bodies %d bytes, non-streaming answers %d bytes with usage, streams of %d events; gaps = %s between upstream events.\n\n",
		c.Duration, c.Rounds, len(requestBody(false, 500)), upstream.New(upstream.Options{}).JSONSize(), c.Chunks, c.EventGap)
	if err := Render(w, rows); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	notes := []string{
		"Figures are medians over the rounds; ×base, +p50 and added TTFB are medians of the per-round comparison with the baseline run of the same round.",
		"CPU µs/req: utime + stime of the server process (/proc/PID/stat) per successful request; the upstream and the load generator run in other processes. " +
			"Peak RSS: VmHWM, reset before every run (clear_refs). MB = 2^20 bytes.",
		"DB rt/req: the proxy's database_acquire_total delta per request. On SQLite that metric counts only waits for a connection, so (a)'s figure is a lower bound.",
		"Redis + DB CPU µs/req (set-up (b)): the Redis server's CPU (INFO cpu, every thread; any other client of that Redis counts too) and the CPU of the PostgreSQL backends connected to (b)'s database (/proc), per request — CPU the proxy's work costs on the same cores besides its own.",
		"Streaming clients ask for stream_options.include_usage themselves, so the upstream sends the same bytes to every target; TTFB is the time to the first body byte.",
		"The load generator (this process) runs with GOGC=1000 under `make bench`, so its own garbage collections do not stall every target's requests alike.",
	}
	notes = append(notes, r.notes...)
	for _, row := range rows {
		if row.Med.Errors > 0 {
			notes = append(notes, fmt.Sprintf("%s, %s: %d failed requests, first: %s", row.Scenario, row.Setup, row.Med.Errors, row.Med.FirstErr))
		}
	}
	notes = append(notes, fmt.Sprintf("Wall time: %s.", time.Since(r.start).Round(time.Second)))
	fmt.Fprintln(w)
	for _, n := range notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	return nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
