package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

// The scale benchmark's flags (make bench-scale passes them after -args).
var (
	runScaleBench = flag.Bool("bench.scale", false, "run the scale benchmark (TestBenchScale; make bench-scale)")
	scaleTokens   = flag.Int("scale.tokens", 1_000_000, "withering tokens to fill")
	scaleProjects = flag.Int("scale.projects", 10_000, "projects to fill (tokens are spread over them)")
	scaleCold     = flag.Int("scale.cold", 1000, "cold requests of each kind of token (without and with max_requests), each with a token never used before")
	scaleColdConc = flag.Int("scale.cold-concurrency", 8, "concurrent clients of the cold requests")
	scaleDuration = flag.Duration("scale.duration", 3*time.Second, "length of each warm-token run")
	scaleRounds   = flag.Int("scale.rounds", 5, "interleaved warm-token rounds (big database, empty database, then reversed)")
)

// Targets of the scale issue.
const (
	targetReady      = 300 * time.Millisecond
	targetColdDBTrip = 1.0
	// coldBackground is the allowance for the usage batches and touches
	// written during a cold run, which database_acquire_total counts too:
	// the budget of TestBench's "DB round trips/req" for warm requests.
	coldBackground = 0.05
	// targetWarmRatio is how far the warm-token figures on the big
	// database may drift from those on the empty one and still count as
	// unchanged on a noisy machine.
	targetWarmRatio = 1.1
)

// scaleReadyRuns is how many starts each readiness figure is the median of.
const scaleReadyRuns = 3

// TestBenchScale is the scale benchmark, run only with -bench.scale (make
// bench-scale): it fills a fresh PostgreSQL database with -scale.projects
// projects and -scale.tokens withering tokens (generate_series, hashes
// computed in SQL, every project's upstream the benchmark's mock upstream),
// and a second one with one project and its tokens, then through the real
// proxy binary (PostgreSQL + Redis, DATABASE_AUTO_MIGRATE=false) measures:
// the time from exec to the first 200 from /readyz on both; the first CORS
// preflight, which loads the union of every active project's origins;
// cold tokens — requests each with a token never used before, spread over
// the projects, without and with max_requests — their database round trips
// (the proxy's database_acquire_total delta) and latency; and the same
// warm token at chat c=32 on both databases in interleaved rounds. It
// prints a Markdown table with the targets; like TestBench it fails only
// when it cannot measure.
//
// It needs BENCH_DATABASE_URL or TEST_DATABASE_URL (a server where it may
// create and drop databases) and BENCH_REDIS_URL or TEST_REDIS_URL.
func TestBenchScale(t *testing.T) {
	if !*runScaleBench {
		t.Skip("the scale benchmark runs only with -bench.scale (make bench-scale)")
	}
	admin := cmp.Or(os.Getenv("BENCH_DATABASE_URL"), os.Getenv("TEST_DATABASE_URL"))
	redisURL := cmp.Or(os.Getenv("BENCH_REDIS_URL"), os.Getenv("TEST_REDIS_URL"))
	if admin == "" || redisURL == "" {
		t.Fatal("set BENCH_DATABASE_URL or TEST_DATABASE_URL, and BENCH_REDIS_URL or TEST_REDIS_URL")
	}
	if *scaleTokens < 2 || *scaleProjects < 1 || *scaleCold < 1 || *scaleCold*2 > *scaleTokens-2 {
		t.Fatal("-scale.tokens must leave 2 × -scale.cold tokens besides the warm one, and -scale.projects must be positive")
	}
	ctx := t.Context()
	begin := time.Now()
	s := &scaleRun{t: t, redisURL: redisURL, salt: "sk-" + randomBase64URL(11)}
	defer s.teardown()

	bins := binaries.ForTest(t, false)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s.proxyBin = bins.Proxy
	s.upstreamKey = "sk-bench-upstream-" + randomName("")
	up, err := startProcess(helperUpstream, self, []string{"-api-key", s.upstreamKey}, []string{helperEnv + "=" + helperUpstream})
	if err != nil {
		t.Fatal(err)
	}
	s.procs = append(s.procs, up)
	if s.upstreamURL, err = up.listenURL(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	encKey := make([]byte, secret.KeySize)
	_, _ = rand.Read(encKey)
	s.encKey = base64.StdEncoding.EncodeToString(encKey)
	cipher, err := secret.NewCipher(encKey)
	if err != nil {
		t.Fatal(err)
	}
	if s.apiKeyEnc, err = cipher.Encrypt([]byte(s.upstreamKey)); err != nil {
		t.Fatal(err)
	}
	s.bodies = &bodies{chat: requestBody(false, 500), minChat: upstream.New(upstream.Options{}).JSONSize() * 9 / 10}

	big := s.database(ctx, admin)
	empty := s.database(ctx, admin)
	fillStart := time.Now()
	if err := s.fill(ctx, big, *scaleProjects, *scaleTokens); err != nil {
		t.Fatalf("fill: %v", err)
	}
	fill := time.Since(fillStart)
	t.Logf("filled %d projects and %d tokens in %s", *scaleProjects, *scaleTokens, fill.Round(time.Second))
	if err := s.fill(ctx, empty, 1, 2); err != nil {
		t.Fatalf("fill the empty database: %v", err)
	}

	readyBig, err := s.readiness(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	readyEmpty, err := s.readiness(ctx, empty)
	if err != nil {
		t.Fatal(err)
	}

	bigT, err := s.start(ctx, "proxy, big database", big)
	if err != nil {
		t.Fatal(err)
	}
	emptyT, err := s.start(ctx, "proxy, empty database", empty)
	if err != nil {
		t.Fatal(err)
	}
	// The warm token is token 1 (with max_requests) in both databases.
	bigT.auth, emptyT.auth = "Bearer "+s.secret(1), "Bearer "+s.secret(1)
	for _, tg := range []*target{bigT, emptyT} {
		res := RunLoad(ctx, tg.client, tg.load(Scenario{Concurrency: 32}, time.Second))
		if res.Errors*100 > res.Requests+res.Errors || res.Requests == 0 {
			t.Fatalf("%s warm-up: %d of %d requests failed (first: %s)", tg.name, res.Errors, res.Errors+res.Requests, res.FirstErr)
		}
	}

	// The first preflight of each loads the union of allowed origins.
	var preflights [2]preflightResult
	for i, tg := range []*target{bigT, emptyT} {
		if preflights[i], err = preflight(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}

	var colds []coldResult
	for _, quota := range []bool{false, true} {
		c, err := s.cold(ctx, bigT, quota)
		if err != nil {
			t.Fatal(err)
		}
		colds = append(colds, c)
	}
	warmDB, err := s.warmDBTrips(ctx, bigT)
	if err != nil {
		t.Fatal(err)
	}

	samples := map[*target][]Sample{}
	sc := Scenario{Name: Chat32, Concurrency: 32}
	for round := range *scaleRounds {
		for _, tg := range order([]*target{bigT, emptyT}, round) {
			smp, err := tg.measure(ctx, sc, *scaleDuration)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("warm round %d/%d %-22s %7.0f req/s  p50 %.3f ms  p99 %.3f ms  %.0f µs CPU/req",
				round+1, *scaleRounds, tg.name, smp.RPS, smp.P50, smp.P99, smp.CPUPerReq)
			if smp.Errors*100 > smp.Requests+smp.Errors {
				t.Fatalf("%s: %d of %d requests failed (first: %s)", tg.name, smp.Errors, smp.Requests+smp.Errors, smp.FirstErr)
			}
			samples[tg] = append(samples[tg], smp)
		}
	}
	s.report(scaleReport{fill: fill, readyBig: readyBig, readyEmpty: readyEmpty, preflights: preflights, colds: colds, warmDB: warmDB,
		big: samples[bigT], empty: samples[emptyT], elapsed: time.Since(begin)})
}

// scaleRun is the state of one scale benchmark.
type scaleRun struct {
	t           *testing.T
	redisURL    string
	salt        string // the first 14 characters of every token secret
	proxyBin    string
	upstreamURL string
	upstreamKey string
	encKey      string // ENCRYPTION_KEY, base64
	apiKeyEnc   []byte // the upstream key encrypted with it
	bodies      *bodies
	procs       []*process
	clients     []*http.Client
	cleanup     []func(context.Context) error
}

// secret returns the secret of token i: the run's salt and i in 32
// digits, TokenLen characters in all, the shape auth.NewToken produces.
func (s *scaleRun) secret(i int) string { return fmt.Sprintf("%s%032d", s.salt, i) }

func randomBase64URL(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// database creates and migrates a fresh database, dropped at teardown.
func (s *scaleRun) database(ctx context.Context, admin string) string {
	s.t.Helper()
	dbURL, drop, err := createDatabase(ctx, admin)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cleanup = append(s.cleanup, drop)
	m, err := schema.New(ctx, schema.DriverPostgres, dbURL, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	err = m.Up(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return dbURL
}

// fillBatch is the number of tokens one INSERT … generate_series writes.
const fillBatch = 100_000

// fill inserts projects projects (all of the benchmark's upstream, key
// encrypted with the proxy's ENCRYPTION_KEY; one in ten allows the browser
// origin scaleOrigin(i)) and tokens tokens spread over them: token i belongs to project i % projects and has max_requests
// when i is odd. Limits are on but never reached. Hashes are computed in
// SQL: auth.Hash is the hex SHA-256 of the secret.
func (s *scaleRun) fill(ctx context.Context, dbURL string, projects, tokens int) error {
	if n := len(s.secret(tokens)); n != auth.TokenLen {
		return fmt.Errorf("token secrets are %d characters, want %d", n, auth.TokenLen)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	now := time.Now().UTC()
	_, err = conn.Exec(ctx, `INSERT INTO projects (id, name, provider, base_url, api_key_encrypted, api_key_hint,
			rpm_limit, tpm_limit, allowed_origins, created_at, updated_at)
		SELECT `+uuidOf("i")+`, 'scale-' || i, 'openai', $1, $2, $3, 1000000000, 2000000000,
			CASE WHEN i % 10 = 0 THEN jsonb_build_array('https://app-' || i || '.example') ELSE '[]' END, $4, $4
		FROM generate_series(0, $5::int - 1) AS i`,
		s.upstreamURL+"/v1", s.apiKeyEnc, secret.Mask(s.upstreamKey), now, projects)
	if err != nil {
		return fmt.Errorf("projects: %w", err)
	}
	insert := `INSERT INTO tokens (id, project_id, token_hash, prefix, label, expires_at, max_requests,
			rpm_limit, tpm_limit, created_at)
		SELECT ` + uuidOf("i") + `, ` + uuidOf("i % $5::int") + `, encode(sha256(convert_to(sec, 'UTF8')), 'hex'),
			left(sec, ` + fmt.Sprint(auth.PrefixLen) + `), 'scale', $2, CASE WHEN i % 2 = 1 THEN 1000000000 END,
			1000000000, 2000000000, $3
		FROM (SELECT i, $1::text || lpad(i::text, 32, '0') AS sec FROM generate_series($4::int, $6::int - 1) AS i) AS g`
	for from := 0; from < tokens; from += fillBatch {
		to := min(from+fillBatch, tokens)
		if _, err := conn.Exec(ctx, insert, s.salt, now.Add(30*day), now, from, projects, to); err != nil {
			return fmt.Errorf("tokens %d to %d: %w", from, to, err)
		}
	}
	var hash string
	if err := conn.QueryRow(ctx, `SELECT token_hash FROM tokens WHERE id = `+uuidOf("1")).Scan(&hash); err != nil {
		return fmt.Errorf("read back token 1: %w", err)
	}
	if hash != auth.Hash(s.secret(1)) {
		return errors.New("the hash computed in SQL is not auth.Hash of the secret")
	}
	_, err = conn.Exec(ctx, `ANALYZE projects; ANALYZE tokens`)
	return err
}

// env is the proxy's environment on dbURL: PostgreSQL + Redis (a key
// prefix of its own, removed at teardown), no migration at start.
// REDIS_TIMEOUT is 250 ms rather than 50: on a shared machine the default
// refuses a few percent of the requests with 503, and a call that takes
// longer is rare and would show in p99 anyway.
func (s *scaleRun) env(ctx context.Context, dbURL string) ([]string, error) {
	prefix := randomName("bench_") + ":"
	probe, err := newRedisProbe(ctx, s.redisURL, prefix)
	if err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, probe.cleanup)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return []string{"DATABASE_URL=" + dbURL, "DATABASE_AUTO_MIGRATE=false", "REDIS_URL=" + s.redisURL,
		"REDIS_KEY_PREFIX=" + prefix, "REDIS_TIMEOUT=250ms", "ENCRYPTION_KEY=" + s.encKey, "LOG_LEVEL=warn", "DRAIN_DELAY=0s",
		"SHUTDOWN_GRACE=5s", fmt.Sprintf("LISTEN_ADDR=127.0.0.1:%d", port)}, nil
}

func listenAddr(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "LISTEN_ADDR="); ok {
			return v
		}
	}
	return ""
}

// readiness starts the proxy on dbURL scaleReadyRuns times and returns
// the times from exec to the first 200 from /readyz, polled every
// millisecond.
func (s *scaleRun) readiness(ctx context.Context, dbURL string) ([]time.Duration, error) {
	env, err := s.env(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for range scaleReadyRuns {
		start := time.Now()
		p, err := startProcess("proxy", s.proxyBin, nil, env)
		if err != nil {
			return nil, err
		}
		err = p.pollReady(ctx, "http://"+listenAddr(env)+"/readyz", 30*time.Second, time.Millisecond)
		elapsed := time.Since(start)
		if err := errors.Join(err, p.stop()); err != nil {
			return nil, err
		}
		out = append(out, elapsed)
	}
	return out, nil
}

// start starts the proxy on dbURL for the load runs.
func (s *scaleRun) start(ctx context.Context, name, dbURL string) (*target, error) {
	env, err := s.env(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(name, s.proxyBin, nil, env)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	tg := &target{name: name, proc: p, base: "http://" + listenAddr(env), metrics: true, client: NewClient(64), bodies: s.bodies}
	s.clients = append(s.clients, tg.client)
	if err := p.waitReady(ctx, tg.base+"/readyz", 60*time.Second); err != nil {
		return nil, err
	}
	return tg, nil
}

// scaleOrigin is the browser origin project i allows when i % 10 == 0.
func scaleOrigin(i int) string { return fmt.Sprintf("https://app-%d.example", i) }

// preflightResult is the first CORS preflight of a proxy, which loads the
// union of the active projects' allowed origins, and the next one.
type preflightResult struct {
	first, next time.Duration
	dbTrips     float64 // of the first
}

// preflight sends two CORS preflights to tg and reads the database round
// trips of the first.
func preflight(ctx context.Context, tg *target) (preflightResult, error) {
	send := func() (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodOptions, tg.base+"/v1/chat/completions", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Origin", scaleOrigin(0))
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		start := time.Now()
		resp, err := tg.client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("preflight: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != scaleOrigin(0) {
			return 0, fmt.Errorf("preflight: status %d, Access-Control-Allow-Origin %q; want 204 allowing %s",
				resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), scaleOrigin(0))
		}
		return time.Since(start), nil
	}
	acq0, err := tg.acquireCount(ctx)
	if err != nil {
		return preflightResult{}, err
	}
	var r preflightResult
	if r.first, err = send(); err != nil {
		return preflightResult{}, err
	}
	acq1, err := tg.acquireCount(ctx)
	if err != nil {
		return preflightResult{}, err
	}
	if r.next, err = send(); err != nil {
		return preflightResult{}, err
	}
	r.dbTrips = acq1 - acq0
	return r, nil
}

// coldResult is one run of cold tokens.
type coldResult struct {
	quota            bool
	requests, errors int
	firstErr         string
	dbPerReq         float64
	p50, p99         time.Duration
}

// coldIndex returns the token of cold request j: distinct for every j (the
// step is coprime with the range), never token 0 or 1 (the warm ones),
// spread over the projects, odd (with max_requests) when quota.
func coldIndex(j, pairs int, quota bool) int {
	m := pairs - 1 // pairs 1 … pairs-1
	step := 7919
	for gcd(step, m) != 1 {
		step++
	}
	k := 1 + (j*step)%m
	if quota {
		return 2*k + 1
	}
	return 2 * k
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// cold sends -scale.cold requests to tg, each with a token no request
// used before, from -scale.cold-concurrency clients, and reads the
// database round trips around them.
func (s *scaleRun) cold(ctx context.Context, tg *target, quota bool) (coldResult, error) {
	acq0, err := tg.acquireCount(ctx)
	if err != nil {
		return coldResult{}, err
	}
	n, pairs := *scaleCold, *scaleTokens/2
	var (
		next atomic.Int64
		mu   sync.Mutex
		lat  []time.Duration
		res  = coldResult{quota: quota}
		wg   sync.WaitGroup
	)
	for range *scaleColdConc {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for ctx.Err() == nil {
				j := int(next.Add(1)) - 1
				if j >= n {
					return
				}
				l := Load{URL: tg.base + "/v1/chat/completions", Body: tg.bodies.chat, MinBytes: tg.bodies.minChat,
					Header: http.Header{"Authorization": {"Bearer " + s.secret(coldIndex(j, pairs, quota))},
						"Content-Type": {"application/json"}}}
				d, _, err := doRequest(ctx, tg.client, l, buf)
				mu.Lock()
				if err != nil {
					res.errors++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	acq1, err := tg.acquireCount(ctx)
	if err != nil {
		return coldResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return coldResult{}, err
	}
	res.requests = len(lat)
	if res.requests == 0 || res.errors*100 > n {
		return coldResult{}, fmt.Errorf("cold tokens: %d of %d requests failed (first: %s)", res.errors, n, res.firstErr)
	}
	slices.Sort(lat)
	res.p50, res.p99 = Percentile(lat, 50), Percentile(lat, 99)
	res.dbPerReq = (acq1 - acq0) / float64(res.requests)
	return res, nil
}

// warmDBTrips runs the warm token at the cold runs' concurrency for a
// second and returns its database round trips per request: what usage
// batches and the rest cost without any token to load.
func (s *scaleRun) warmDBTrips(ctx context.Context, tg *target) (float64, error) {
	smp, err := tg.measure(ctx, Scenario{Name: "warm, cold concurrency", Concurrency: *scaleColdConc}, time.Second)
	if err != nil {
		return math.NaN(), err
	}
	return smp.DBPerReq, nil
}

// teardown stops the processes and drops the databases.
func (s *scaleRun) teardown() {
	for _, c := range s.clients {
		c.CloseIdleConnections()
	}
	for _, p := range slices.Backward(s.procs) {
		if err := p.stop(); err != nil {
			s.t.Error(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range s.cleanup {
		if err := c(ctx); err != nil {
			s.t.Error(err)
		}
	}
}

type scaleReport struct {
	fill                 time.Duration
	readyBig, readyEmpty []time.Duration
	preflights           [2]preflightResult // big, empty
	colds                []coldResult
	warmDB               float64
	big, empty           []Sample
	elapsed              time.Duration
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func medianOf(xs []time.Duration) time.Duration {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return time.Duration(Median(f))
}

func joinMillis(xs []time.Duration) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", ms(x))
	}
	return strings.Join(parts, ", ") + " ms"
}

// warmFigure is one warm-token figure on both databases.
type warmFigure struct {
	label      string
	unit       string
	of         func(Sample) float64
	lowerWorse bool // req/s: the big database's value may not drop
}

func (s *scaleRun) report(r scaleReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Scale (PostgreSQL + Redis, %d tokens over %d projects)\n\n", *scaleTokens, *scaleProjects)
	fmt.Fprintf(&b, "Machine: %s, %d cores; load average %s at the end.\n\n", cpuModel(), runtime.NumCPU(), loadAvg())
	fmt.Fprintf(&b, "| measure | target | measured | |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| fill (generate_series, %d tokens a statement, hashes in SQL; ANALYZE) | < 3 min | %s | |\n",
		fillBatch, r.fill.Round(100*time.Millisecond))
	rb := medianOf(r.readyBig)
	fmt.Fprintf(&b, "| ready after start (exec → first 200 from /readyz), big database, median of %d | ≤ %.0f ms | %.0f ms (%s) | %s |\n",
		scaleReadyRuns, ms(targetReady), ms(rb), joinMillis(r.readyBig), verdict(rb <= targetReady))
	fmt.Fprintf(&b, "| the same on the empty database, for comparison | | %.0f ms (%s) | |\n",
		ms(medianOf(r.readyEmpty)), joinMillis(r.readyEmpty))
	pb, pe := r.preflights[0], r.preflights[1]
	fmt.Fprintf(&b, "| first CORS preflight (loads the union of the active projects' origins): big / empty database | | %s / %s; DB round trips %.0f / %.0f | |\n",
		millis(pb.first), millis(pe.first), pb.dbTrips, pe.dbTrips)
	fmt.Fprintf(&b, "| the next preflight (the union cached for AUTH_CACHE_TTL): big / empty database | | %s / %s | |\n",
		millis(pb.next), millis(pe.next))
	for _, c := range r.colds {
		kind := "without max_requests"
		if c.quota {
			kind = "with max_requests"
		}
		fmt.Fprintf(&b, "| cold tokens %s (%d, c=%d): DB round trips / request | ≤ %.0f (+ %.2f for usage batches) | %.3f | %s |\n",
			kind, c.requests, *scaleColdConc, targetColdDBTrip, coldBackground, c.dbPerReq,
			verdict(c.dbPerReq <= targetColdDBTrip+coldBackground))
		fmt.Fprintf(&b, "| cold tokens %s: p50 / p99 | | %s / %s | |\n", kind, millis(c.p50), millis(c.p99))
	}
	fmt.Fprintf(&b, "| warm token at c=%d on the big database: DB round trips / request (usage batches, touches, heartbeat) | | %.3f | |\n",
		*scaleColdConc, r.warmDB)
	figures := []warmFigure{
		{label: "req/s", of: func(x Sample) float64 { return x.RPS }, lowerWorse: true},
		{label: "p50", unit: " ms", of: func(x Sample) float64 { return x.P50 }},
		{label: "p99", unit: " ms", of: func(x Sample) float64 { return x.P99 }},
		{label: "CPU µs/req", of: func(x Sample) float64 { return x.CPUPerReq }},
	}
	for _, f := range figures {
		big, empty := median(r.big, f.of), median(r.empty, f.of)
		ratios := make([]float64, min(len(r.big), len(r.empty)))
		for i := range ratios {
			ratios[i] = f.of(r.big[i]) / f.of(r.empty[i])
		}
		ratio := Median(ratios)
		target, ok := fmt.Sprintf("≤ %.1f×", targetWarmRatio), ratio <= targetWarmRatio
		if f.lowerWorse {
			target, ok = fmt.Sprintf("≥ %.2f×", 1/targetWarmRatio), ratio >= 1/targetWarmRatio
		}
		fmt.Fprintf(&b, "| warm token, chat c=32: %s big / empty database | %s | %.4g%s / %.4g%s, ratio %.2f× | %s |\n",
			f.label, target, big, f.unit, empty, f.unit, ratio, verdict(ok))
	}
	fmt.Fprintf(&b, "| warm token, chat c=32: DB round trips / request, big / empty database | | %.3f / %.3f | |\n",
		median(r.big, func(x Sample) float64 { return x.DBPerReq }), median(r.empty, func(x Sample) float64 { return x.DBPerReq }))
	fmt.Fprintln(&b)
	notes := []string{
		"Set-up: the proxy binary on PostgreSQL + Redis with DATABASE_AUTO_MIGRATE=false and REDIS_TIMEOUT=250ms (the 50 ms default " +
			"refuses a few requests on a shared machine), the benchmark's mock upstream; " +
			"the empty database holds one project and its two tokens. One project in ten allows a browser origin of its own; " +
			"the preflights ask for project 0's.",
		fmt.Sprintf("Cold tokens: each request carries a token no request used before, token i of project i %% %d; "+
			"\"DB round trips\" is the proxy's database_acquire_total delta per request over the whole run, so it includes "+
			"the usage batches and last-use touches written meanwhile (the warm row at the same concurrency shows their share). "+
			"A token with max_requests seeds its Redis quota counter from the copy authentication has just read, in the same script call.", *scaleProjects),
		fmt.Sprintf("Warm token: chat c=32 for %s, %d rounds interleaved (big → empty, then reversed); medians, and the "+
			"median of the per-round ratios (the load of the shared machine changes from round to round); "+
			"CPU is utime + stime of the proxy process per request. The machine is shared and noisy.", *scaleDuration, *scaleRounds),
		fmt.Sprintf("Wall time: %s.", r.elapsed.Round(time.Second)),
	}
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	fmt.Fprint(os.Stdout, b.String())
}

func median(xs []Sample, of func(Sample) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = of(x)
	}
	return Median(v)
}
