package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Sample is what one run of one target in one scenario measured.
type Sample struct {
	RPS         float64 // successful requests per second
	P50, P99    float64 // latency to the end of the answer, ms
	TTFB50      float64 // time to the first body byte, ms
	CPUPerReq   float64 // user + system CPU of the target process per request, µs
	PeakRSS     float64 // VmHWM during the run, MB (2^20 bytes)
	DBPerReq    float64 // database_acquire_total delta per request; NaN when not measured
	RedisPerReq float64 // Redis commands processed per request (INFO); NaN when not measured
	RedisCPU    float64 // the Redis server's CPU per request, µs; NaN when not measured
	DBCPU       float64 // the PostgreSQL backends' CPU per request, µs; NaN when not measured
	Requests    int
	Errors      int
	FirstErr    string
}

// Set-up keys: the baseline and the proxy's two set-ups.
const (
	KeyBaseline = "baseline"
	KeyA        = "a"
	KeyB        = "b"
	// KeyAPolicies is set-up (a) serving a project with an origin list,
	// the requests carrying an allowed Origin.
	KeyAPolicies = "a+policies"
	// KeyACache is set-up (a) answering from its response cache (chat
	// scenarios only: streams are never cached).
	KeyACache = "a+cache"
	// KeyAMemory is set-up (a) with memory capture: every request carries
	// X-Session-ID (one agent session, as an agent sends it), so its
	// transcript is collected while relaying and written in the background.
	KeyAMemory = "a+memory"
	// KeyAAgent is set-up (a) serving an SSO agent token (SPEC §6.5)
	// instead of a withering token, from the SSO_PROJECT.
	KeyAAgent = "a+agent"
)

// Row summarises one target in one scenario over all rounds.
type Row struct {
	Scenario string
	Key      string // KeyBaseline, KeyA or KeyB
	Setup    string // display name
	Med      Sample // per-field medians over the rounds; Requests and Errors are sums
	// Per-round comparisons with the baseline run of the same round,
	// medians over the rounds; NaN for the baseline itself.
	RPSRatio, CPURatio, P99Ratio, AddedP50, AddedTTFB float64
	// RedisRoundTrips is the commands the proxy itself sent to Redis per
	// request (counted with MONITOR), NaN when not measured.
	RedisRoundTrips float64
	// SoakGrowth is the mean RSS of the soak's last third over its first
	// third, NaN outside the soak row.
	SoakGrowth float64
	// Startup is the median time from exec to ready, ms, NaN outside the
	// start-up row.
	Startup float64
	Checks  []Check
}

// Summarize builds the row of one target from its runs, paired round by
// round with the baseline's runs of the same scenario (base is nil for the
// baseline itself).
func Summarize(scenario, key, setup string, runs, base []Sample) Row {
	col := func(f func(Sample) float64) float64 {
		xs := make([]float64, len(runs))
		for i, s := range runs {
			xs[i] = f(s)
		}
		return Median(xs)
	}
	r := Row{Scenario: scenario, Key: key, Setup: setup, RedisRoundTrips: math.NaN(), SoakGrowth: math.NaN(), Startup: math.NaN()}
	r.Med = Sample{
		RPS: col(func(s Sample) float64 { return s.RPS }), P50: col(func(s Sample) float64 { return s.P50 }),
		P99: col(func(s Sample) float64 { return s.P99 }), TTFB50: col(func(s Sample) float64 { return s.TTFB50 }),
		CPUPerReq: col(func(s Sample) float64 { return s.CPUPerReq }), PeakRSS: col(func(s Sample) float64 { return s.PeakRSS }),
		DBPerReq: col(func(s Sample) float64 { return s.DBPerReq }), RedisPerReq: col(func(s Sample) float64 { return s.RedisPerReq }),
		RedisCPU: col(func(s Sample) float64 { return s.RedisCPU }), DBCPU: col(func(s Sample) float64 { return s.DBCPU }),
	}
	for _, s := range runs {
		r.Med.Requests += s.Requests
		r.Med.Errors += s.Errors
		if r.Med.FirstErr == "" {
			r.Med.FirstErr = s.FirstErr
		}
	}
	paired := func(f func(s, b Sample) float64) float64 {
		if base == nil {
			return math.NaN()
		}
		var xs []float64
		for i := range min(len(runs), len(base)) {
			xs = append(xs, f(runs[i], base[i]))
		}
		return Median(xs)
	}
	r.RPSRatio = paired(func(s, b Sample) float64 { return ratio(s.RPS, b.RPS) })
	r.CPURatio = paired(func(s, b Sample) float64 { return ratio(s.CPUPerReq, b.CPUPerReq) })
	r.P99Ratio = paired(func(s, b Sample) float64 { return ratio(s.P99, b.P99) })
	r.AddedP50 = paired(func(s, b Sample) float64 { return s.P50 - b.P50 })
	r.AddedTTFB = paired(func(s, b Sample) float64 { return s.TTFB50 - b.TTFB50 })
	return r
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// Goal is one target of the performance issue: Value(row) compared with
// Limit by Op ("<=" or ">=") for the row of Scenario and set-up Key.
type Goal struct {
	Scenario string
	Key      string
	Label    string // what is compared, e.g. "req/s vs baseline"
	Op       string
	Limit    float64
	Unit     string // appended to the figures: "×", " ms", " MB" or ""
	Value    func(Row) float64
}

// Check is a Goal evaluated on a row.
type Check struct {
	Goal  Goal
	Value float64
}

// Verdict is "PASS" when the value meets the goal, "MISS" when it does
// not, and "n/a" when it was not measured.
func (c Check) Verdict() string {
	switch {
	case math.IsNaN(c.Value):
		return "n/a"
	case c.Goal.Op == "<=" && c.Value <= c.Goal.Limit, c.Goal.Op == ">=" && c.Value >= c.Goal.Limit:
		return "PASS"
	default:
		return "MISS"
	}
}

// String renders the check as "label ≤ 0.70×: 0.81× MISS".
func (c Check) String() string {
	op := map[string]string{"<=": "≤", ">=": "≥"}[c.Goal.Op]
	return fmt.Sprintf("%s %s %s%s: %s%s **%s**", c.Goal.Label, op, trim(c.Goal.Limit), c.Goal.Unit,
		fmtFloat(c.Value, 2), c.Goal.Unit, c.Verdict())
}

// Apply attaches every goal that names the row's scenario and set-up.
func Apply(rows []Row, goals []Goal) {
	for i := range rows {
		for _, g := range goals {
			if g.Scenario == rows[i].Scenario && g.Key == rows[i].Key {
				rows[i].Checks = append(rows[i].Checks, Check{Goal: g, Value: g.Value(rows[i])})
			}
		}
	}
}

// Render writes rows as one Markdown table.
func Render(w io.Writer, rows []Row) error {
	var b strings.Builder
	b.WriteString("| scenario | set-up | req/s | ×base | p50 ms | p99 ms | +p50 ms | TTFB p50 ms | CPU µs/req | ×base | peak RSS MB | DB rt/req | Redis cmd/req | Redis + DB CPU µs/req | targets |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rows {
		checks := make([]string, len(r.Checks))
		for i, c := range r.Checks {
			checks[i] = c.String()
		}
		setup := r.Setup
		if r.Med.Errors > 0 {
			setup += fmt.Sprintf(" (%d errors)", r.Med.Errors)
		}
		services := "—"
		if !math.IsNaN(r.Med.RedisCPU) || !math.IsNaN(r.Med.DBCPU) {
			services = fmtFloat(r.Med.RedisCPU, 0) + " + " + fmtFloat(r.Med.DBCPU, 0)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, setup, fmtFloat(r.Med.RPS, 0), fmtFloat(r.RPSRatio, 2),
			fmtFloat(r.Med.P50, 3), fmtFloat(r.Med.P99, 3), fmtSigned(r.AddedP50, 3), fmtFloat(r.Med.TTFB50, 3),
			fmtFloat(r.Med.CPUPerReq, 0), fmtFloat(r.CPURatio, 2), fmtFloat(r.Med.PeakRSS, 1),
			fmtFloat(r.Med.DBPerReq, 3), fmtFloat(r.Med.RedisPerReq, 2), services, strings.Join(checks, "; "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtFloat(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

func fmtSigned(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	return fmt.Sprintf("%+.*f", prec, x)
}

// trim prints a limit without trailing zeros: 1.2, 0.05, 48.
func trim(x float64) string { return fmt.Sprintf("%g", x) }
