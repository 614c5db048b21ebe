package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole harness briefly against the baseline and
// set-up (a): it builds the proxy, starts the processes (the helpers are
// this test binary) and prints the table with every scenario and its
// verdicts.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, log bytes.Buffer
	start := time.Now()
	err := Run(ctx, Config{Duration: 100 * time.Millisecond, Warmup: 50 * time.Millisecond, Rounds: 1,
		Soak: time.Second, SkipCluster: true, Out: &out, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s\nreport:\n%s", err, log.String(), out.String())
	}
	report := out.String()
	t.Logf("took %s\n%s", time.Since(start), report)
	for _, sc := range append(DefaultScenarios(0), Scenario{Name: SoakScenario(time.Second)}) {
		for _, setup := range []string{"baseline", "proxy (a) SQLite", "proxy (a) agent token"} {
			if sc.Name == SoakScenario(time.Second) && setup != "proxy (a) SQLite" ||
				setup == "proxy (a) agent token" && sc.Name != Chat1 && sc.Name != Chat32 && sc.Name != Stream32 {
				continue
			}
			if !strings.Contains(report, "| "+sc.Name+" | "+setup+" | ") {
				t.Errorf("report has no row for %s / %s", sc.Name, setup)
			}
		}
	}
	if n := strings.Count(report, "**PASS**") + strings.Count(report, "**MISS**"); n != 10 {
		t.Errorf("report has %d verdicts, want the 10 goals of set-up (a)", n)
	}
	for _, want := range []string{"Machine: ", "Set-up (b) PostgreSQL + Redis was skipped", "RSS last third", "| " + Startup + " | proxy (a) SQLite | "} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(report, "errors)") {
		t.Errorf("requests failed:\n%s", report)
	}
}
