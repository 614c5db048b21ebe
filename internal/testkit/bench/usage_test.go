package bench

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/retention"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
)

// The usage benchmark's flags (make bench-usage passes them after -args).
var (
	runUsageBench = flag.Bool("bench.usage", false, "run the usage-at-scale benchmark (TestBenchUsage; make bench-usage)")
	usageRows     = flag.Int("usage.rows", 10_000_000, "usage rows to fill")
	usageDays     = flag.Int("usage.days", 90, "days the rows are spread over, ending today")
	usageQueries  = flag.Int("usage.queries", 10, "measured calls of each /manage/usage query (after 2 warm-up calls)")
)

// Targets of issue #13.
const (
	targetQuery         = 200 * time.Millisecond
	targetInsertLatency = 100 * time.Millisecond
)

const day = 24 * time.Hour

// TestBenchUsage is the usage-at-scale benchmark of issue #13, run only
// with -bench.usage (make bench-usage): it fills a fresh PostgreSQL
// database with -usage.rows usage rows over -usage.days days ending now
// (20 projects of 5 tokens, each token using two of four models, one row in
// ten a cache hit) with generate_series, one day per statement, and the
// roll-up of each day; then, through the real proxy binary, it times
// /manage/usage grouped by day and by model over the last 30 days (edges
// not aligned to hours); finally it runs the retention sweep that removes
// the oldest 30 days while a concurrent writer inserts batches of 100 rows
// through the store and records its slowest insert. It prints a Markdown
// table with the targets; like TestBench it fails only when it cannot
// measure.
//
// It needs BENCH_DATABASE_URL or TEST_DATABASE_URL (a server where it may
// create and drop a database).
func TestBenchUsage(t *testing.T) {
	if !*runUsageBench {
		t.Skip("the usage benchmark runs only with -bench.usage (make bench-usage)")
	}
	admin := cmp.Or(os.Getenv("BENCH_DATABASE_URL"), os.Getenv("TEST_DATABASE_URL"))
	if admin == "" {
		t.Fatal("set BENCH_DATABASE_URL or TEST_DATABASE_URL")
	}
	ctx := context.Background()
	dbURL, drop, err := createDatabase(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := drop(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	m, err := schema.New(ctx, schema.DriverPostgres, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := postgres.Open(ctx, postgres.Options{URL: dbURL, PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	now := time.Now().UTC()
	today := now.Truncate(day)
	first := today.Add(-time.Duration(*usageDays-1) * day)
	if _, err := st.EnsurePartitions(ctx, first, today.Add(8*day)); err != nil {
		t.Fatalf("create partitions: %v", err)
	}
	fillStart := time.Now()
	if err := fillUsage(ctx, dbURL, first, now, *usageDays, *usageRows); err != nil {
		t.Fatalf("fill: %v", err)
	}
	fill := time.Since(fillStart)
	t.Logf("filled %d rows over %d days in %s", *usageRows, *usageDays, fill.Round(time.Second))

	from, to := now.Add(-30*day), now
	queries, err := timeQueries(ctx, t, dbURL, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAnswer(ctx, dbURL, queries[0].body, from, to); err != nil {
		t.Fatalf("the group_by=day answer: %v", err)
	}

	sweep, err := timeRetention(ctx, st, now)
	if err != nil {
		t.Fatal(err)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n### Usage at scale (PostgreSQL, %d rows over %d days)\n\n", *usageRows, *usageDays)
	fmt.Fprintf(&b, "| measure | target | measured |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| fill (generate_series, one day per statement, with the roll-up) | < 5 min | %s (%.0f rows/s) |\n",
		fill.Round(time.Second), float64(*usageRows)/fill.Seconds())
	for _, q := range queries {
		fmt.Fprintf(&b, "| `GET /manage/usage?%s` (30 days), median / max of %d | ≤ %s | %s / %s |\n",
			q.name, *usageQueries, targetQuery, millis(q.median), millis(q.max))
	}
	fmt.Fprintf(&b, "| retention of the oldest 30 days (%d rows: whole daily partitions and their roll-up) | seconds | %s |\n",
		sweep.res.Usage, sweep.elapsed.Round(10*time.Millisecond))
	fmt.Fprintf(&b, "| concurrent writer during retention: slowest / p99 of %d inserts of 100 rows | ≤ %s | %s / %s |\n",
		sweep.during.inserts, targetInsertLatency, millis(sweep.during.max), millis(sweep.during.p99))
	fmt.Fprintf(&b, "| the same writer right after, as long, without retention: slowest / p99 of %d inserts | (machine noise) | %s / %s |\n",
		sweep.after.inserts, millis(sweep.after.max), millis(sweep.after.p99))
	fmt.Fprint(os.Stdout, b.String())
}

func millis(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// uuidOf is the SQL of a UUID made of a number (a project's or a token's).
func uuidOf(expr string) string {
	return `('00000000-0000-4000-8000-' || lpad(to_hex(` + expr + `), 12, '0'))::uuid`
}

// fillUsage inserts rows usage rows spread evenly over days days from
// first (the last day ends at now), one INSERT … generate_series per day
// followed by that day's roll-up.
func fillUsage(ctx context.Context, dbURL string, first, now time.Time, days, rows int) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// token = i*7919 % 100; project = token / 5; model: one of two per
	// token; ids: day number and row number, so they are unique.
	insert := `INSERT INTO usage (id, created_at, request_id, project_id, token_id, model, endpoint, status,
			prompt_tokens, completion_tokens, total_tokens, latency_ms, ttfb_ms, streamed, cached)
		SELECT (lpad(to_hex($1::int), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
			$2::timestamptz + i * $3::float8 * interval '1 microsecond', 'bench',
			` + uuidOf(`(i * 7919 % 100) / 5 + 1000`) + `, ` + uuidOf(`i * 7919 % 100`) + `,
			(ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'llama-3'])[1 + ((i * 7919 % 100) + (i / 100) % 2) % 4],
			'/v1/chat/completions', CASE WHEN i % 50 = 0 THEN 429 ELSE 200 END,
			i % 1000, i % 300, i % 1000 + i % 300, i % 2000, i % 500, i % 2 = 0, i % 10 = 0
		FROM generate_series(0, $4::int - 1) AS i`
	rollup := `INSERT INTO usage_rollup
		SELECT g.granularity, date_trunc(g.granularity, u.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
			coalesce(u.project_id::text, ''), coalesce(u.token_id::text, ''), coalesce(u.agent_token_id::text, ''),
			u.model, u.cached, u.purpose, count(*), sum(u.prompt_tokens), sum(u.completion_tokens), sum(u.total_tokens)
		FROM usage u CROSS JOIN (VALUES ('hour'), ('day')) AS g (granularity)
		WHERE u.created_at >= $1 AND u.created_at < $2
		GROUP BY 1, 2, 3, 4, 5, 6, 7, 8`
	per := rows / days
	for d := range days {
		n := per
		if d == days-1 {
			n = rows - per*(days-1)
		}
		start := first.Add(time.Duration(d) * day)
		end := start.Add(day)
		if end.After(now) {
			end = now
		}
		step := float64(end.Sub(start).Microseconds()) / float64(n)
		if _, err := conn.Exec(ctx, insert, d, start, step, n); err != nil {
			return fmt.Errorf("day %d: %w", d, err)
		}
		if _, err := conn.Exec(ctx, rollup, start, start.Add(day)); err != nil {
			return fmt.Errorf("roll-up of day %d: %w", d, err)
		}
	}
	_, err = conn.Exec(ctx, `ANALYZE usage; ANALYZE usage_rollup`)
	return err
}

type timedQuery struct {
	name        string
	median, max time.Duration
	body        []byte
}

// timeQueries starts the proxy on dbURL and times /manage/usage over
// [from, to).
func timeQueries(ctx context.Context, t *testing.T, dbURL string, from, to time.Time) ([]timedQuery, error) {
	bins := binaries.ForTest(t, false)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	const mgmt = "bench-management-token"
	p, err := startProcess("proxy", bins.Proxy, nil, []string{"DATABASE_URL=" + dbURL, "MANAGEMENT_TOKEN=" + mgmt,
		"ENCRYPTION_KEY=" + base64.StdEncoding.EncodeToString(make([]byte, 32)), "LISTEN_ADDR=" + base[len("http://"):],
		"LOG_LEVEL=warn", "DATABASE_AUTO_MIGRATE=false", "DRAIN_DELAY=0s"})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := p.stop(); err != nil {
			t.Logf("stop proxy: %v", err)
		}
	}()
	if err := p.waitReady(ctx, base+"/readyz", 60*time.Second); err != nil {
		return nil, err
	}
	var out []timedQuery
	for _, group := range []string{"day", "model"} {
		q := url.Values{"group_by": {group}, "from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}
		tq := timedQuery{name: "group_by=" + group}
		var times []time.Duration
		for i := range *usageQueries + 2 {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/manage/usage?"+q.Encode(), nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", "Bearer "+mgmt)
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			elapsed := time.Since(start)
			if err != nil || resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET /manage/usage?%s: %d %s %v", q.Encode(), resp.StatusCode, body, err)
			}
			tq.body = body
			if i >= 2 {
				times = append(times, elapsed)
			}
		}
		slices.Sort(times)
		tq.median, tq.max = times[len(times)/2], times[len(times)-1]
		out = append(out, tq)
	}
	return out, nil
}

// checkAnswer compares the requests and tokens of a group_by=day answer
// with a count over the raw rows of the window.
func checkAnswer(ctx context.Context, dbURL string, body []byte, from, to time.Time) error {
	var answer struct {
		Data []struct {
			Requests    int64 `json:"requests"`
			TotalTokens int64 `json:"total_tokens"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return fmt.Errorf("decode: %w: %s", err, body)
	}
	var got, gotTokens int64
	for _, d := range answer.Data {
		got += d.Requests
		gotTokens += d.TotalTokens
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var want, wantTokens int64
	if err := conn.QueryRow(ctx, `SELECT count(*), sum(total_tokens) FROM usage WHERE created_at >= $1 AND created_at < $2`,
		from, to).Scan(&want, &wantTokens); err != nil {
		return err
	}
	if got != want || gotTokens != wantTokens || want == 0 {
		return fmt.Errorf("%d requests and %d tokens, the raw rows hold %d and %d", got, gotTokens, want, wantTokens)
	}
	return nil
}

type sweepResult struct {
	res     retention.Result
	elapsed time.Duration
	// The writer's latencies during the sweep, and right after it for as
	// long without one (what the busy machine alone costs).
	during, after latencies
}

// latencies summarises a writer's inserts.
type latencies struct {
	inserts  int
	max, p99 time.Duration
}

// writer inserts batches of 100 rows through st every 5 ms until stop is
// closed, and returns its latencies.
func writer(ctx context.Context, st *postgres.DB, stop <-chan struct{}) (latencies, error) {
	var took []time.Duration
	for {
		select {
		case <-stop:
			if len(took) == 0 {
				return latencies{}, fmt.Errorf("the writer inserted nothing")
			}
			slices.Sort(took)
			return latencies{inserts: len(took), max: took[len(took)-1], p99: took[len(took)*99/100]}, nil
		default:
		}
		rows := make([]store.Usage, 100)
		for i := range rows {
			rows[i] = store.Usage{ID: uuid.NewString(), CreatedAt: time.Now().UTC(), RequestID: "writer",
				Model: "gpt-4o", Endpoint: "/v1/chat/completions", Status: 200, PromptTokens: 5, TotalTokens: 5}
		}
		start := time.Now()
		if err := st.InsertUsage(ctx, rows); err != nil {
			return latencies{}, err
		}
		took = append(took, time.Since(start))
		time.Sleep(5 * time.Millisecond) // the writer's pace (load, not a wait): a batch every 5 ms
	}
}

// timeRetention runs the sweep that removes the oldest 30 days while a
// writer inserts batches of 100 rows, and returns the sweep's figures and
// the writer's latencies during the sweep and, for comparison on a busy
// machine, for as long right after it.
func timeRetention(ctx context.Context, st *postgres.DB, now time.Time) (sweepResult, error) {
	// The rows span days-1 whole days and today's part: keeping days-31
	// whole days (plus today's part) leaves the oldest 30 to go.
	sw := retention.New(st, retention.Options{Usage: time.Duration(*usageDays-31) * day,
		Now: func() time.Time { return now }})
	var (
		wg   sync.WaitGroup
		lat  latencies
		werr error
	)
	stop := make(chan struct{})
	wg.Go(func() { lat, werr = writer(ctx, st, stop) })
	start := time.Now()
	res, _, err := sw.SweepOnce(ctx)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		return sweepResult{}, fmt.Errorf("retention sweep: %w", err)
	}
	if werr != nil {
		return sweepResult{}, fmt.Errorf("writer during the sweep: %w", werr)
	}
	out := sweepResult{res: res, elapsed: elapsed, during: lat}

	stop = make(chan struct{})
	wg.Go(func() { lat, werr = writer(ctx, st, stop) })
	time.Sleep(elapsed) // the same writer as long as the sweep took (load, not a wait)
	close(stop)
	wg.Wait()
	if werr != nil {
		return sweepResult{}, fmt.Errorf("writer without a sweep: %w", werr)
	}
	out.after = lat
	return out, nil
}
