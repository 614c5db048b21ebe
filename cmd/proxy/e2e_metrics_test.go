package main

import (
	"bufio"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape returns every sample of /metrics keyed by its name and labels as
// printed (e.g. `http_requests_total{method="POST",route="/v1/*",status="200"}`).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	pid := g.project(t, "metrics", "openai", g.up.URL)
	_, secret := g.token(t, pid, map[string]any{"max_requests": 1000, "rpm_limit": 1000, "tpm_limit": 1000000})
	const n = 6 // five here and one that checks Server-Timing
	for range n - 1 {
		if code, body := chat(t, g.p.addr, secret, "gpt-4o-mini"); code != http.StatusOK {
			t.Fatalf("chat: %d %s", code, body)
		}
	}
	req, _ := http.NewRequest("POST", g.p.addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hello please"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := resp.Header.Get("Server-Timing"); !regexp.MustCompile(`^proxy;dur=\d+\.\d, upstream;dur=\d+\.\d$`).MatchString(st) {
		t.Errorf("Server-Timing = %q", st)
	}
	if code, _ := chat(t, g.p.addr, "sk-not-a-real-token", "gpt-4o-mini"); code != http.StatusUnauthorized {
		t.Fatalf("unknown token: %d", code)
	}
	g.waitUsage(t, n)
	var m map[string]float64
	waitFor(t, 5*time.Second, "usage rows counted as written", func() bool {
		m = scrape(t, g.p.addr)
		return m[`batch_written_rows_total{kind="usage"}`] >= n
	})
	for name, want := range map[string]float64{
		`http_requests_total{method="POST",route="/v1/*",status="200"}`:              n,
		`http_requests_total{method="POST",route="/v1/*",status="401"}`:              1,
		`http_request_duration_seconds_count{route="/v1/*",status="200"}`:            n,
		`http_request_duration_seconds_bucket{route="/v1/*",status="200",le="+Inf"}`: n,
		`upstream_request_duration_seconds_count{provider="openai"}`:                 n,
		`upstream_time_to_first_byte_seconds_count{provider="openai"}`:               n,
		`ratelimit_decisions_total{decision="allowed",limit="rate"}`:                 n,
		`ratelimit_decisions_total{decision="allowed",limit="quota"}`:                n,
		`batch_dropped_rows_total{kind="usage"}`:                                     0,
		`http_requests_in_flight`:                                                    1, // the scrape itself
		`database_connections_max{driver="sqlite"}`:                                  5,
	} {
		got, ok := m[name]
		if !ok || got != want {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, want)
		}
	}
	// Projects are labelled by ID; their names stay off an open /metrics.
	for kind, want := range map[string]float64{"prompt": 3 * n, "completion": 5 * n} {
		name := `llm_tokens_total{kind="` + kind + `",model="gpt-4o-mini",project_id="` + pid + `"}`
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, want)
		}
	}
	if m[`database_acquire_total{driver="sqlite"}`] < 0 || m[`http_request_duration_seconds_bucket{route="/v1/*",status="200",le="0.0005"}`] > n {
		t.Errorf("implausible figures: %v", m)
	}
	for name := range m {
		if strings.Contains(name, "/v1/chat/completions") || strings.Contains(name, secret) {
			t.Errorf("unbounded label value in %s", name)
		}
		if strings.Contains(name, `"metrics"`) || strings.HasPrefix(name, "llm_project_info") {
			t.Errorf("/metrics without METRICS_TOKEN names the project in %s", name)
		}
	}
}
