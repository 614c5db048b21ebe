package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestSummarizePairsRounds(t *testing.T) {
	nan := math.NaN()
	base := []Sample{{RPS: 100, P50: 1.0, TTFB50: 2, CPUPerReq: 100}, {RPS: 200, P50: 2.0, TTFB50: 2, CPUPerReq: 100}, {RPS: 100, P50: 1.0, TTFB50: 2, CPUPerReq: 100}}
	runs := []Sample{
		{RPS: 120, P50: 1.1, TTFB50: 2.5, CPUPerReq: 60, DBPerReq: 0.01, RedisPerReq: nan, Requests: 10},
		{RPS: 220, P50: 2.3, TTFB50: 2.1, CPUPerReq: 80, DBPerReq: 0.03, RedisPerReq: nan, Requests: 10, Errors: 1, FirstErr: "boom"},
		{RPS: 130, P50: 1.05, TTFB50: 2.2, CPUPerReq: 70, DBPerReq: 0.02, RedisPerReq: nan, Requests: 10},
	}
	r := Summarize(Chat32, KeyA, "proxy (a)", runs, base)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("median req/s", r.Med.RPS, 130)
	near("median p50", r.Med.P50, 1.1)
	near("median DB/req", r.Med.DBPerReq, 0.02)
	// Paired per round: 1.2, 1.1, 1.3 — not 130/100 from the medians.
	near("req/s ratio", r.RPSRatio, 1.2)
	near("CPU ratio", r.CPURatio, 0.7)
	near("added p50", r.AddedP50, 0.1)
	near("added TTFB", r.AddedTTFB, 0.2)
	if !math.IsNaN(r.Med.RedisPerReq) {
		t.Errorf("Redis/req = %v, want NaN when never measured", r.Med.RedisPerReq)
	}
	if r.Med.Requests != 30 || r.Med.Errors != 1 || r.Med.FirstErr != "boom" {
		t.Errorf("totals = %d requests, %d errors, %q; want 30, 1, boom", r.Med.Requests, r.Med.Errors, r.Med.FirstErr)
	}
	b := Summarize(Chat32, KeyBaseline, "baseline", base, nil)
	if !math.IsNaN(b.RPSRatio) || !math.IsNaN(b.AddedP50) {
		t.Errorf("baseline ratios = %v, %v; want NaN", b.RPSRatio, b.AddedP50)
	}
}

func TestCheckVerdict(t *testing.T) {
	tests := []struct {
		op    string
		limit float64
		value float64
		want  string
	}{
		{">=", 1.2, 1.25, "PASS"},
		{">=", 1.2, 1.2, "PASS"},
		{">=", 1.2, 1.19, "MISS"},
		{"<=", 0.05, 0.05, "PASS"},
		{"<=", 0.05, 0.051, "MISS"},
		{"<=", 0.05, -0.3, "PASS"},
		{"<=", 48, math.NaN(), "n/a"},
		{">=", 1, math.Inf(1), "PASS"},
	}
	for _, tt := range tests {
		c := Check{Goal: Goal{Op: tt.op, Limit: tt.limit}, Value: tt.value}
		if got := c.Verdict(); got != tt.want {
			t.Errorf("%v %s %v: Verdict = %s, want %s", tt.value, tt.op, tt.limit, got, tt.want)
		}
	}
}

func TestApplyMatchesScenarioAndSetup(t *testing.T) {
	rows := []Row{
		{Scenario: Chat32, Key: KeyBaseline},
		{Scenario: Chat32, Key: KeyA, RPSRatio: 1.3, CPURatio: 0.8},
		{Scenario: Chat32, Key: KeyB, RPSRatio: 0.9, Med: Sample{DBPerReq: 0.01}, RedisRoundTrips: 3},
		{Scenario: Chat1, Key: KeyA, AddedP50: 0.02},
	}
	Apply(rows, Goals(0))
	got := map[string][]string{}
	for _, r := range rows {
		for _, c := range r.Checks {
			got[r.Scenario+"/"+r.Key] = append(got[r.Scenario+"/"+r.Key], c.Goal.Label+"="+c.Verdict())
		}
	}
	want := map[string]string{
		Chat32 + "/" + KeyA: "req/s=PASS CPU/req=MISS",
		Chat32 + "/" + KeyB: "req/s=MISS DB round trips/req=PASS Redis round trips/req=MISS",
		Chat1 + "/" + KeyA:  "added p50=PASS",
	}
	for k, w := range want {
		if g := strings.Join(got[k], " "); g != w {
			t.Errorf("%s checks = %q, want %q", k, g, w)
		}
	}
	if len(rows[0].Checks) != 0 {
		t.Errorf("baseline row got checks %v", rows[0].Checks)
	}
}

func TestRender(t *testing.T) {
	nan := math.NaN()
	rows := []Row{
		{Scenario: Chat32, Key: KeyBaseline, Setup: "baseline", RPSRatio: nan, CPURatio: nan, AddedP50: nan, AddedTTFB: nan,
			Med: Sample{RPS: 1000, P50: 1, P99: 5, TTFB50: nan, CPUPerReq: 200, PeakRSS: 12.34, DBPerReq: nan, RedisPerReq: nan, RedisCPU: nan, DBCPU: nan}},
		{Scenario: Chat32, Key: KeyA, Setup: "proxy (a)", RPSRatio: 1.25, CPURatio: 0.65, AddedP50: -0.0123, AddedTTFB: nan,
			Med: Sample{RPS: 1250, P50: 0.9877, P99: 4, TTFB50: nan, CPUPerReq: 130, PeakRSS: 30, DBPerReq: 0, RedisPerReq: nan,
				RedisCPU: 21.4, DBCPU: 35.6, Errors: 2}},
	}
	Apply(rows, Goals(0))
	var buf bytes.Buffer
	if err := Render(&buf, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want header, rule and 2 rows:\n%s", len(lines), buf.String())
	}
	cols := strings.Count(lines[0], "|")
	for i, l := range lines {
		if strings.Count(l, "|") != cols {
			t.Errorf("line %d has %d bars, header has %d: %s", i, strings.Count(l, "|"), cols, l)
		}
	}
	wantRows := []string{
		"| chat c=32 | baseline | 1000 | — | 1.000 | 5.000 | — | — | 200 | — | 12.3 | — | — | — |  |",
		"| chat c=32 | proxy (a) (2 errors) | 1250 | 1.25 | 0.988 | 4.000 | -0.012 | — | 130 | 0.65 | 30.0 | 0.000 | — | 21 + 36 | " +
			"req/s ≥ 1.3×: 1.25× **MISS**; CPU/req ≤ 0.65×: 0.65× **PASS** |",
	}
	for i, w := range wantRows {
		if lines[2+i] != w {
			t.Errorf("row %d:\n got %s\nwant %s", i, lines[2+i], w)
		}
	}
}

func TestOrderAlternates(t *testing.T) {
	ts := []string{"baseline", "a", "b"}
	if got := strings.Join(order(ts, 0), ","); got != "baseline,a,b" {
		t.Errorf("round 0 = %s", got)
	}
	if got := strings.Join(order(ts, 1), ","); got != "b,a,baseline" {
		t.Errorf("round 1 = %s", got)
	}
	if got := strings.Join(ts, ","); got != "baseline,a,b" {
		t.Errorf("order changed its input: %s", got)
	}
}

func TestRequestBodySize(t *testing.T) {
	for _, stream := range []bool{false, true} {
		b := requestBody(stream, 500)
		if len(b) != 500 {
			t.Errorf("stream=%t: body is %d bytes, want 500", stream, len(b))
		}
		if got := bytes.Contains(b, []byte(`"include_usage":true`)); got != stream {
			t.Errorf("stream=%t: include_usage present = %t", stream, got)
		}
	}
}
