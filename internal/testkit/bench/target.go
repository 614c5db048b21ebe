package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

// target is one server under measurement.
type target struct {
	key, name string
	proc      *process
	base      string // http://127.0.0.1:PORT
	auth      string // the client's Authorization header
	metrics   bool   // serves /metrics with database_acquire_total
	redis     *redisProbe
	db        *dbProbe // the PostgreSQL backends' CPU, for set-up (b)
	client    *http.Client
	bodies    *bodies
	header    http.Header // sent with every measured request, besides the auth
	only      []string    // the scenarios it is measured in; nil: all
}

// bodies are the fixed request bodies and the shortest valid answers.
type bodies struct {
	chat, stream         []byte
	minChat, minStream   int
	upstreamKey, mgmtKey string
}

// load returns the closed-loop run of sc against t.
func (t *target) load(sc Scenario, d time.Duration) Load {
	h := http.Header{"Authorization": {t.auth}, "Content-Type": {"application/json"}}
	for k, vv := range t.header {
		h[k] = vv
	}
	l := Load{URL: t.base + "/v1/chat/completions", Header: h, Body: t.bodies.chat, MinBytes: t.bodies.minChat,
		Concurrency: sc.Concurrency, Duration: d}
	if sc.Stream {
		l.Body, l.MinBytes = t.bodies.stream, t.bodies.minStream
		h.Set("Accept", "text/event-stream")
		if sc.EventGap > 0 {
			h.Set(upstream.GapHeader, sc.EventGap.String())
		}
	}
	return l
}

// measure runs sc once against t and reads the process's counters around it.
func (t *target) measure(ctx context.Context, sc Scenario, d time.Duration) (Sample, error) {
	pid := t.proc.pid()
	acq0, red0 := math.NaN(), int64(0)
	var err error
	if t.metrics {
		if acq0, err = t.acquireCount(ctx); err != nil {
			return Sample{}, err
		}
	}
	if t.redis != nil {
		if red0, err = t.redis.commands(ctx); err != nil {
			return Sample{}, err
		}
	}
	svc0, err := t.servicesCPU(ctx)
	if err != nil {
		return Sample{}, err
	}
	if err := ResetPeak(pid); err != nil {
		return Sample{}, err
	}
	cpu0, err := CPUTime(pid)
	if err != nil {
		return Sample{}, err
	}
	res := RunLoad(ctx, t.client, t.load(sc, d))
	cpu1, err := CPUTime(pid)
	if err != nil {
		return Sample{}, err
	}
	mem, err := ReadMemory(pid)
	if err != nil {
		return Sample{}, err
	}
	svc1, err := t.servicesCPU(ctx)
	if err != nil {
		return Sample{}, err
	}
	if err := ctx.Err(); err != nil {
		return Sample{}, err
	}
	if res.Requests == 0 {
		return Sample{}, fmt.Errorf("%s, %s: no request succeeded (%d errors; first: %s)", t.name, sc.Name, res.Errors, res.FirstErr)
	}
	n := float64(res.Requests)
	s := Sample{
		RPS: res.RPS(), P50: ms(Percentile(res.Latency, 50)), P99: ms(Percentile(res.Latency, 99)),
		TTFB50: math.NaN(), CPUPerReq: float64(cpu1-cpu0) / float64(time.Microsecond) / n,
		PeakRSS: float64(mem.Peak) / (1 << 20), DBPerReq: math.NaN(), RedisPerReq: math.NaN(),
		RedisCPU: math.NaN(), DBCPU: math.NaN(),
		Requests: res.Requests, Errors: res.Errors, FirstErr: res.FirstErr,
	}
	if t.redis != nil {
		s.RedisCPU = float64(svc1.redis-svc0.redis) / float64(time.Microsecond) / n
	}
	if t.db != nil {
		s.DBCPU = float64(CPUDelta(svc0.db, svc1.db)) / float64(time.Microsecond) / n
	}
	if sc.Stream {
		s.TTFB50 = ms(Percentile(res.TTFB, 50))
	}
	if t.redis != nil {
		red1, err := t.redis.commands(ctx)
		if err != nil {
			return Sample{}, err
		}
		s.RedisPerReq = float64(red1-red0) / n
	}
	if t.metrics {
		acq1, err := t.acquireCount(ctx)
		if err != nil {
			return Sample{}, err
		}
		s.DBPerReq = (acq1 - acq0) / n
	}
	return s, nil
}

// servicesCPU is a reading of the CPU time of the servers behind set-up
// (b): Redis, and the PostgreSQL backends of its database by PID.
type servicesCPU struct {
	redis time.Duration
	db    map[int]time.Duration
}

func (t *target) servicesCPU(ctx context.Context) (servicesCPU, error) {
	var c servicesCPU
	var err error
	if t.redis != nil {
		if c.redis, err = t.redis.cpu(ctx); err != nil {
			return c, err
		}
	}
	if t.db != nil {
		if c.db, err = t.db.cpu(ctx); err != nil {
			return c, err
		}
	}
	return c, nil
}

// acquireCount scrapes database_acquire_total from the proxy's /metrics.
func (t *target) acquireCount(ctx context.Context) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("metrics request: %w", err)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s metrics: %w", t.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("scrape %s metrics: %w", t.name, err)
	}
	v, ok := ParseMetric(string(b), "database_acquire_total")
	if !ok {
		return 0, fmt.Errorf("%s /metrics has no database_acquire_total", t.name)
	}
	return v, nil
}

// ParseMetric returns the sum of every series of the Prometheus text
// metric name, and whether there was one.
func ParseMetric(text, name string) (float64, bool) {
	var sum float64
	found := false
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// setupProxy creates the benchmark's project and withering token through
// the management API and keeps the token as the client's credential.
func (t *target) setupProxy(ctx context.Context, upstream string) error {
	return t.setupProject(ctx, upstream, "bench", nil)
}

// variant returns a target on t's process with a project of its own,
// created with the extra project fields, and extra request headers.
func (t *target) variant(ctx context.Context, key, name, upstream string, fields map[string]any, header http.Header) (*target, error) {
	v := *t
	v.key, v.name, v.header = key, name, header
	if err := v.setupProject(ctx, upstream, "bench-"+key, fields); err != nil {
		return nil, err
	}
	return &v, nil
}

// setupProject creates the project name (with the extra fields) and a
// token of it, whose secret the target then sends. Both carry a model
// allow-list the benchmark's model passes, so every request runs both
// checks.
func (t *target) setupProject(ctx context.Context, upstream, name string, fields map[string]any) error {
	var project struct {
		ID string `json:"id"`
	}
	body := map[string]any{"name": name, "provider": "openai", "base_url": upstream + "/v1", "api_key": t.bodies.upstreamKey,
		"allowed_models": []string{"gpt-4o-*", "gpt-4.1-*"}}
	for k, v := range fields {
		body[k] = v
	}
	if err := t.manage(ctx, "/manage/projects", body, &project); err != nil {
		return err
	}
	// Limits high enough never to trigger, but on: each request still runs
	// the quota, requests/min and tokens/min checks. tpm_limit stays below
	// 2^31 (an integer column on PostgreSQL).
	var token struct {
		Token string `json:"token"`
	}
	if err := t.manage(ctx, "/manage/tokens", map[string]any{
		"project_id": project.ID, "duration_minutes": 1440, "label": "bench",
		"max_requests": 1_000_000_000, "rpm_limit": 1_000_000_000, "tpm_limit": 2_000_000_000,
		"allowed_models": []string{"gpt-4o-mini", "gpt-4.1-mini"},
	}, &token); err != nil {
		return err
	}
	t.auth = "Bearer " + token.Token
	return nil
}

func (t *target) manage(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("request %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+t.bodies.mgmtKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s on %s: %w", path, t.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("POST %s on %s: %w", path, t.name, err)
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST %s on %s: status %d: %s", path, t.name, resp.StatusCode, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// requestBody returns a chat request of exactly size bytes.
func requestBody(stream bool, size int) []byte {
	build := func(pad int) []byte {
		m := map[string]any{
			"model": "gpt-4o-mini", "max_tokens": 256, "temperature": 0.2,
			"messages": []any{
				map[string]string{"role": "system", "content": "You are a helpful assistant."},
				map[string]string{"role": "user", "content": strings.Repeat("x", pad)},
			},
		}
		if stream {
			// The client asks for the usage chunk itself, so the upstream
			// sends the same bytes to the proxy and to the baseline.
			m["stream"] = true
			m["stream_options"] = map[string]bool{"include_usage": true}
		}
		b, _ := json.Marshal(m)
		return b
	}
	return build(max(0, size-len(build(0))))
}

// measures tells whether t is measured in scenario sc.
func (t *target) measures(sc Scenario) bool {
	return t.only == nil || slices.Contains(t.only, sc.Name)
}
