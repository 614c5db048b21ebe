package testbed_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/testbed"
)

// client is shared by every test's load; it keeps enough idle connections
// for hundreds of concurrent clients.
var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second},
}

const chatBody = `{"model":"mock-model","messages":[{"role":"user","content":"hello"}]}`

// startCluster is testbed.StartCluster for tests that load the cluster
// through client: before the replicas stop, the client closes its idle
// connections. A connection the transport dialled but never used is, to
// the replica, one whose first request has not arrived yet, and
// http.Server.Shutdown waits 5 s before it counts such a connection as
// idle.
func startCluster(t *testing.T, opts testbed.Options) *testbed.Cluster {
	t.Helper()
	c := testbed.StartCluster(t, opts)
	t.Cleanup(client.CloseIdleConnections)
	return c
}

// result is one request's outcome.
type result struct {
	status int
	dur    time.Duration
	err    error
}

// chat sends a chat completion with secret to base and reads the whole
// answer.
func chat(base, secret string) result {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err, dur: time.Since(start)}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return result{status: resp.StatusCode, dur: time.Since(start), err: err}
}

// pace is how often each load client starts a request at most: a steady
// load with requests in flight on every replica at any moment, which leaves
// the machine room to run the cluster. Flat out, the clients alone kept two
// cores busy, and latencies measured the machine's run queue.
const pace = 5 * time.Millisecond

// load runs clients concurrent loops of send, each starting a request at
// most every pace, until stop is closed and returns every result.
func load(clients int, stop <-chan struct{}, send func(client, n int) result) []result {
	var (
		mu  sync.Mutex
		all []result
		wg  sync.WaitGroup
	)
	for c := range clients {
		wg.Go(func() {
			var mine []result
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for n := 0; ; n++ {
				mine = append(mine, send(c, n))
				select {
				case <-stop:
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
					return
				case <-tick.C:
				}
			}
		})
	}
	wg.Wait()
	return all
}

// progress counts the requests a load has completed, so that a test waits
// for the load to flow rather than for a while.
type progress struct {
	mu   sync.Mutex
	n    int
	more chan struct{} // closed, and replaced, at every completion
}

func newProgress() *progress { return &progress{more: make(chan struct{})} }

// done counts r and returns it.
func (p *progress) done(r result) result {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	close(p.more)
	p.more = make(chan struct{})
	return r
}

// await returns once n more requests than so far have completed, failing
// t after timeout.
func (p *progress) await(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	p.mu.Lock()
	target := p.n + n
	p.mu.Unlock()
	for {
		p.mu.Lock()
		got, more := p.n, p.more
		p.mu.Unlock()
		if got >= target {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("the load completed %d of %d requests within %s", got-(target-n), n, timeout)
		}
	}
}

// loadFor runs load for d.
func loadFor(clients int, d time.Duration, send func(client, n int) result) []result {
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	return load(clients, stop, send)
}

// tally counts results by status; transport errors count under 0.
func tally(rs []result) map[int]int {
	m := map[int]int{}
	for _, r := range rs {
		if r.err != nil {
			m[0]++
			continue
		}
		m[r.status]++
	}
	return m
}

// firstErrors describes up to three transport errors in rs.
func firstErrors(rs []result) string {
	var out []string
	for _, r := range rs {
		if r.err != nil && len(out) < 3 {
			out = append(out, r.err.Error())
		}
	}
	return strings.Join(out, "; ")
}

// p99 returns the 99th percentile duration of rs.
func p99(rs []result) time.Duration {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.dur
	}
	slices.Sort(ds)
	if len(ds) == 0 {
		return 0
	}
	return ds[(len(ds)*99+99)/100-1]
}

func project(t *testing.T, c *testbed.Cluster) string {
	t.Helper()
	id, err := c.CreateProject(context.Background(), "testbed-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func token(t *testing.T, c *testbed.Cluster, o testbed.TokenOptions) testbed.Token {
	t.Helper()
	tok, err := c.CreateToken(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// warm sends one request with each token to every replica, so every
// replica has the tokens cached; it fails t unless all get 200.
func warm(t *testing.T, c *testbed.Cluster, toks ...testbed.Token) int {
	t.Helper()
	n := 0
	for _, tok := range toks {
		for _, r := range c.Replicas {
			if res := chat(r.URL, tok.Secret); res.err != nil || res.status != http.StatusOK {
				t.Fatalf("warm-up request on replica %d: status %d, %v", r.Index, res.status, res.err)
			}
			n++
		}
	}
	return n
}

// sharedLimitRound creates a token allowing 3 requests/min and sends one
// request to each replica in turn and a fourth to the first: a cluster-wide
// limiter answers 200, 200, 200, 429 (per-replica limiters would admit all
// four; an unreachable Redis gives 503s or, failing open, 200s).
func sharedLimitRound(t *testing.T, c *testbed.Cluster, projectID string) []int {
	t.Helper()
	tok := token(t, c, testbed.TokenOptions{ProjectID: projectID, RPMLimit: 3})
	statuses := make([]int, 0, 4)
	for i := range 4 {
		statuses = append(statuses, chat(c.Replicas[i%len(c.Replicas)].URL, tok.Secret).status)
	}
	return statuses
}

var sharedLimitWant = []int{http.StatusOK, http.StatusOK, http.StatusOK, http.StatusTooManyRequests}

// requireSharedLimit marks t failed (and goes on, so the outage figures are
// still measured) unless a 3 requests/min limit is enforced
// across the replicas.
func requireSharedLimit(t *testing.T, c *testbed.Cluster, projectID string) {
	t.Helper()
	if got := sharedLimitRound(t, c, projectID); !slices.Equal(got, sharedLimitWant) {
		t.Errorf("rpm_limit=3 across replicas 0,1,2,0 before the outage: statuses %v, want %v (limits are not cluster-wide)", got, sharedLimitWant)
	}
}

// waitLimitsApply repeats sharedLimitRound every 200ms until it answers
// 200, 200, 200, 429, failing t after timeout; it returns the time taken.
func waitLimitsApply(t *testing.T, c *testbed.Cluster, projectID string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got []int
	for time.Since(start) < timeout {
		if got = sharedLimitRound(t, c, projectID); slices.Equal(got, sharedLimitWant) {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("rpm_limit=3 not enforced across replicas within %s after Redis returned: last statuses %v, want %v", timeout, got, sharedLimitWant)
	return 0
}

// noDrain is in the Env of the clusters whose replicas are only stopped at
// cleanup, after the load balancer: nothing routes to them any more, so
// the test bed's DRAIN_DELAY would only slow the teardown.
// TestSIGTERMUnderLoad keeps it.
const noDrain = "DRAIN_DELAY=0s"

// (1) max_requests is exact across replicas under concurrency.
func TestMaxRequestsExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testbed.Options{Env: []string{noDrain}})
	tok := token(t, c, testbed.TokenOptions{ProjectID: project(t, c), MaxRequests: 500})

	const clients, perClient = 200, 4
	var (
		wg      sync.WaitGroup
		results = make([]result, clients*perClient)
	)
	for i := range clients {
		base := c.Replicas[i%len(c.Replicas)].URL
		wg.Go(func() {
			for n := range perClient {
				results[i*perClient+n] = chat(base, tok.Secret)
			}
		})
	}
	wg.Wait()
	got := tally(results)
	t.Logf("max_requests=500, %d clients x %d requests over %d replicas: statuses %v", clients, perClient, len(c.Replicas), got)
	if got[http.StatusOK] != 500 || got[http.StatusTooManyRequests] != clients*perClient-500 {
		t.Errorf("want exactly 500 x 200 and %d x 429, got %v (errors: %s)", clients*perClient-500, got, firstErrors(results))
	}
}

// (2) A per-token rpm limit is enforced cluster-wide.
func TestRateLimitExactAcrossReplicas(t *testing.T) {
	c := startCluster(t, testbed.Options{Env: []string{noDrain}})
	const limit, burst, workers = 300, 1000, 100
	tok := token(t, c, testbed.TokenOptions{ProjectID: project(t, c), RPMLimit: limit})

	results := make([]result, burst)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= burst {
					return
				}
				results[i] = chat(c.Replicas[i%len(c.Replicas)].URL, tok.Secret)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	got := tally(results)
	// The limiter is a GCRA bucket (package ratelimit): a full bucket
	// admits limit requests at once and then one more every minute/limit,
	// so a burst lasting elapsed may legitimately admit this many more.
	refill := int(elapsed / (time.Minute / limit))
	t.Logf("rpm_limit=%d, burst of %d over %d replicas in %s: statuses %v (refill during the burst allows up to %d more)",
		limit, burst, len(c.Replicas), elapsed.Round(time.Millisecond), got, refill)
	if got[http.StatusOK]+got[http.StatusTooManyRequests] != burst {
		t.Errorf("want only 200 and 429, got %v (errors: %s)", got, firstErrors(results))
	}
	if ok := got[http.StatusOK]; ok < limit || ok > limit+refill {
		t.Errorf("admitted %d, want %d (+ at most %d refilled during the %s burst)", ok, limit, refill, elapsed.Round(time.Millisecond))
	}
}

// (3) A revocation on one replica reaches the others within 1 s.
func TestRevocationReachesOtherReplicasWithinOneSecond(t *testing.T) {
	c := startCluster(t, testbed.Options{Env: []string{noDrain}})
	tok := token(t, c, testbed.TokenOptions{ProjectID: project(t, c)})
	warm(t, c, tok)

	a := c.Replicas[0]
	code, err := c.Manage(context.Background(), a.URL, http.MethodDelete, "/tokens/"+tok.ID, nil, nil)
	if err != nil || code != http.StatusNoContent {
		t.Fatalf("DELETE /manage/tokens/%s on replica A: status %d, %v", tok.ID, code, err)
	}
	revoked := time.Now()
	if res := chat(a.URL, tok.Secret); res.status != http.StatusUnauthorized {
		t.Errorf("replica A after revoking: status %d (%v), want 401", res.status, res.err)
	}
	refusedAfter := make([]time.Duration, len(c.Replicas))
	var wg sync.WaitGroup
	for _, r := range c.Replicas[1:] {
		wg.Go(func() {
			for time.Since(revoked) < 10*time.Second {
				if res := chat(r.URL, tok.Secret); res.err == nil && res.status == http.StatusUnauthorized {
					refusedAfter[r.Index] = time.Since(revoked)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			refusedAfter[r.Index] = -1
		})
	}
	wg.Wait()
	worst := time.Duration(0)
	for _, r := range c.Replicas[1:] {
		d := refusedAfter[r.Index]
		if d < 0 {
			t.Errorf("replica %d still accepts the revoked token 10s after the DELETE", r.Index)
			continue
		}
		t.Logf("replica %d refuses the revoked token %s after the DELETE returned on replica 0", r.Index, d.Round(time.Millisecond))
		worst = max(worst, d)
	}
	if worst >= time.Second {
		t.Errorf("revocation took %s to reach every replica, want < 1s", worst.Round(time.Millisecond))
	}
}

// requireRedisDegraded checks that, Redis being cut, every replica answers
// /readyz 200 "degraded" naming Redis unreachable under policy: every
// replica shares the one Redis, so none leaves the load balancer.
func requireRedisDegraded(t *testing.T, c *testbed.Cluster, policy string) {
	t.Helper()
	for i, rd := range waitStatus(t, c, "degraded", 3*time.Second) {
		if !strings.HasPrefix(rd.Body["redis"], "unreachable ("+policy) || rd.Body["database"] != "ok" {
			t.Errorf("replica %d /readyz with Redis cut = %v, want redis unreachable (%s) and the database ok", i, rd.Body, policy)
		}
	}
}

// (4) Redis outage during load, with REDIS_FAIL_OPEN true and false: every
// replica stays in service (/readyz 200, "degraded"); limits apply again
// once Redis returns.
func TestRedisOutage(t *testing.T) {
	t.Run("FailOpen", func(t *testing.T) {
		c := startCluster(t, testbed.Options{Env: []string{noDrain, "REDIS_FAIL_OPEN=true", "REDIS_TIMEOUT=50ms"}})
		projectID := project(t, c)
		requireSharedLimit(t, c, projectID)
		tok := token(t, c, testbed.TokenOptions{ProjectID: projectID, RPMLimit: 1_000_000})
		warm(t, c, tok)
		send := func(_, _ int) result { return chat(c.URL, tok.Secret) }

		baseline := loadFor(8, time.Second, send)
		c.Redis.Cut()
		outage := loadFor(8, 2*time.Second, send)
		requireRedisDegraded(t, c, "fail-open")
		c.Redis.Restore()

		pb, po := p99(baseline), p99(outage)
		t.Logf("fail-open: baseline %d requests %v p99 %s; Redis cut: %d requests %v p99 %s (+%s)",
			len(baseline), tally(baseline), pb.Round(time.Millisecond), len(outage), tally(outage), po.Round(time.Millisecond), (po - pb).Round(time.Millisecond))
		for name, rs := range map[string][]result{"baseline": baseline, "outage": outage} {
			if got := tally(rs); got[http.StatusOK] != len(rs) {
				t.Errorf("%s: want every request 200, got %v (errors: %s)", name, got, firstErrors(rs))
			}
		}
		if po-pb >= 50*time.Millisecond {
			t.Errorf("p99 during the Redis outage %s exceeds the baseline %s by %s, want < 50ms", po, pb, po-pb)
		}
		t.Logf("limits apply again %s after Redis returned", waitLimitsApply(t, c, projectID, 10*time.Second).Round(time.Millisecond))
	})
	t.Run("FailClosed", func(t *testing.T) {
		c := startCluster(t, testbed.Options{Env: []string{noDrain, "REDIS_FAIL_OPEN=false", "REDIS_TIMEOUT=50ms"}})
		projectID := project(t, c)
		requireSharedLimit(t, c, projectID)
		tok := token(t, c, testbed.TokenOptions{ProjectID: projectID, RPMLimit: 1_000_000})
		warm(t, c, tok)

		c.Redis.Cut()
		outage := loadFor(4, time.Second, func(_, _ int) result { return chat(c.URL, tok.Secret) })
		requireRedisDegraded(t, c, "fail-closed")
		c.Redis.Restore()

		slowest := time.Duration(0)
		bad := 0
		for _, r := range outage {
			slowest = max(slowest, r.dur)
			if r.err != nil || (r.status != http.StatusServiceUnavailable && r.status != http.StatusTooManyRequests) {
				bad++
			}
		}
		t.Logf("fail-closed: Redis cut: %d requests %v, slowest %s, p99 %s", len(outage), tally(outage), slowest.Round(time.Millisecond), p99(outage).Round(time.Millisecond))
		if bad > 0 {
			t.Errorf("%d of %d requests during the outage got neither 503 nor 429: %v (errors: %s)", bad, len(outage), tally(outage), firstErrors(outage))
		}
		if slowest > 200*time.Millisecond {
			t.Errorf("slowest refusal during the outage took %s, want <= 200ms", slowest)
		}
		t.Logf("limits apply again %s after Redis returned", waitLimitsApply(t, c, projectID, 10*time.Second).Round(time.Millisecond))
	})
}

// waitStatus polls every replica's /readyz until each reports status want,
// failing t after timeout. Every answer on the way must be 200: an outage
// of the shared database must never take a replica out of service.
func waitStatus(t *testing.T, c *testbed.Cluster, want string, timeout time.Duration) []testbed.Readiness {
	t.Helper()
	got := make([]testbed.Readiness, len(c.Replicas))
	deadline := time.Now().Add(timeout)
	for i, r := range c.Replicas {
		for {
			rd, err := c.Ready(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			if rd.Code != http.StatusOK {
				t.Errorf("replica %d /readyz = %d %v while waiting for %q, want 200 throughout", r.Index, rd.Code, rd.Body, want)
			}
			got[i] = rd
			if rd.Body["status"] == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d /readyz still %d %v after %s, want status %q", r.Index, rd.Code, rd.Body, timeout, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return got
}

// (5) PostgreSQL restarted during load: every replica stays ready (200,
// "degraded", so the load balancer keeps them all), cached tokens keep
// working, every 200 is recorded once the database is back, and readiness
// says "ready" again.
func TestPostgresRestart(t *testing.T) {
	c := startCluster(t, testbed.Options{Env: []string{noDrain}})
	projectID := project(t, c)
	toks := make([]testbed.Token, 4)
	for i := range toks {
		toks[i] = token(t, c, testbed.TokenOptions{ProjectID: projectID})
	}
	warmed := warm(t, c, toks...)

	stop := make(chan struct{})
	var results []result
	done := make(chan struct{})
	flow := newProgress()
	go func() {
		defer close(done)
		results = load(8, stop, func(cl, _ int) result { return flow.done(chat(c.URL, toks[cl%len(toks)].Secret)) })
	}()
	flow.await(t, 200, 30*time.Second)
	c.Postgres.Cut()
	cutAt := time.Now()
	for _, rd := range waitStatus(t, c, "degraded", 3*time.Second) {
		if rd.Body["database"] != "unreachable" {
			t.Errorf("/readyz during the cut = %v, want the database named unreachable", rd.Body)
		}
	}
	degradedAfter := time.Since(cutAt)
	time.Sleep(3500*time.Millisecond - time.Since(cutAt))
	for _, r := range c.Replicas {
		if !c.LB.Ready(r.Index) {
			t.Errorf("the load balancer took replica %d out during the database cut", r.Index)
		}
	}
	c.Postgres.Restore()
	restoredAt := time.Now()
	for _, rd := range waitStatus(t, c, "ready", 15*time.Second) {
		if rd.Body["database"] != "ok" || rd.Body["schema"] != "ok" {
			t.Errorf("/readyz after the database returned = %v, want database and schema ok", rd.Body)
		}
	}
	t.Logf("every replica answered /readyz 200 throughout: degraded %s after the cut, ready %s after the database returned",
		degradedAfter.Round(time.Millisecond), time.Since(restoredAt).Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	<-done

	got := tally(results)
	t.Logf("PostgreSQL cut for %s under load: %d requests %v", restoredAt.Sub(cutAt).Round(time.Millisecond), len(results), got)
	if got[http.StatusOK] != len(results) {
		t.Errorf("want every request with a cached token to get 200, got %v (errors: %s)", got, firstErrors(results))
	}
	want := int64(got[http.StatusOK] + warmed)
	var rows int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.CountUsage(context.Background(), http.StatusOK)
		if err != nil {
			t.Fatal(err)
		}
		rows = n
		if rows >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("usage rows with status 200: %d, responses with 200: %d (%s after PostgreSQL returned)", rows, want, time.Since(restoredAt).Round(time.Millisecond))
	if rows != want {
		t.Errorf("usage table holds %d rows with status 200, want %d (one per 200 response)", rows, want)
	}
}

// (6) SIGTERM to one replica under load fails no client request.
func TestSIGTERMUnderLoad(t *testing.T) {
	c := startCluster(t, testbed.Options{})
	tok := token(t, c, testbed.TokenOptions{ProjectID: project(t, c)})

	stop := make(chan struct{})
	var results []result
	done := make(chan struct{})
	flow := newProgress()
	go func() {
		defer close(done)
		results = load(16, stop, func(_, _ int) result { return flow.done(chat(c.URL, tok.Secret)) })
	}()
	flow.await(t, 200, 30*time.Second)
	victim := c.Replicas[1]
	if err := victim.Terminate(); err != nil {
		t.Fatalf("SIGTERM replica 1: %v", err)
	}
	termAt := time.Now()
	select {
	case <-victim.Done():
	case <-time.After(30 * time.Second):
		t.Error("replica 1 did not exit within 30s of SIGTERM")
	}
	exited := time.Since(termAt)
	flow.await(t, 200, 30*time.Second) // through the replicas left
	close(stop)
	<-done

	got := tally(results)
	t.Logf("16 clients through the LB, replica 1 SIGTERMed and exited after %s: %d requests %v, LB retries %d",
		exited.Round(time.Millisecond), len(results), got, c.LB.Retries())
	if got[http.StatusOK] != len(results) {
		t.Errorf("want no failed request, got %v (errors: %s)", got, firstErrors(results))
	}
	if code := victim.ExitCode(); code != 0 {
		t.Errorf("replica 1 exit status %d, want 0", code)
	}
}
