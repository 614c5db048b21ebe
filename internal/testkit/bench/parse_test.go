package bench

import (
	"testing"
	"time"
)

func TestParseMetric(t *testing.T) {
	text := `# HELP database_acquire_total Connection acquisitions.
# TYPE database_acquire_total counter
database_acquire_total{driver="postgres"} 1234
database_acquire_total_other 99
database_acquire_wait_seconds_total{driver="postgres"} 0.5
`
	if v, ok := ParseMetric(text, "database_acquire_total"); !ok || v != 1234 {
		t.Errorf("ParseMetric = %v, %t; want 1234, true", v, ok)
	}
	if v, ok := ParseMetric("database_acquire_total 7\n", "database_acquire_total"); !ok || v != 7 {
		t.Errorf("unlabelled: ParseMetric = %v, %t; want 7, true", v, ok)
	}
	if _, ok := ParseMetric(text, "missing_total"); ok {
		t.Error("ParseMetric found a metric that is not there")
	}
}

func TestParseInfo(t *testing.T) {
	text := "# Stats\r\ntotal_connections_received:5\r\ntotal_commands_processed:1000\r\n\r\n# Commandstats\r\n" +
		"cmdstat_evalsha:calls=300,usec=10,usec_per_call=0.03,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=12,usec=10,usec_per_call=0.8\r\n"
	total, calls, err := ParseInfo(text)
	if err != nil {
		t.Fatal(err)
	}
	if total != 1000 || calls["evalsha"] != 300 || calls["info"] != 12 {
		t.Errorf("ParseInfo = %d, %v", total, calls)
	}
	if _, _, err := ParseInfo("# Stats\r\n"); err == nil {
		t.Error("ParseInfo accepted INFO without total_commands_processed")
	}
}

func TestParseMonitorLine(t *testing.T) {
	tests := []struct {
		line     string
		src, cmd string
		ok       bool
	}{
		{`+1700000000.123456 [0 127.0.0.1:5000] "EVALSHA" "abc" "1" "p:k"` + "\r\n", "127.0.0.1:5000", "evalsha", true},
		{`+1700000000.123456 [3 lua] "get" "p:k"`, "lua", "get", true},
		{`+1700000000.1 [0 unix:/tmp/redis.sock] "ping"`, "unix:/tmp/redis.sock", "ping", true},
		{"+OK", "", "", false},
	}
	for _, tt := range tests {
		src, cmd, ok := ParseMonitorLine(tt.line)
		if src != tt.src || cmd != tt.cmd || ok != tt.ok {
			t.Errorf("ParseMonitorLine(%q) = %q, %q, %t; want %q, %q, %t", tt.line, src, cmd, ok, tt.src, tt.cmd, tt.ok)
		}
	}
}

func TestSelect(t *testing.T) {
	all := DefaultScenarios(0)
	got, err := Select(all, " stream c=32 ,chat c=1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != Chat1 || got[1].Name != Stream32 {
		t.Errorf("Select = %v, want chat c=1 then stream c=32", got)
	}
	if got, _ := Select(all, ""); len(got) != len(all) {
		t.Errorf("empty selection gave %d scenarios, want all %d", len(got), len(all))
	}
	if _, err := Select(all, "chat c=7"); err == nil {
		t.Error("an unknown scenario was accepted")
	}
}

func TestParseInfoCPU(t *testing.T) {
	got, err := ParseInfoCPU("# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n")
	if err != nil || got != 3750*time.Millisecond {
		t.Errorf("ParseInfoCPU = %v, %v; want 3.75s", got, err)
	}
	if _, err := ParseInfoCPU("used_cpu_sys:1.0\r\n"); err == nil {
		t.Error("INFO without used_cpu_user was accepted")
	}
}

func TestCPUDelta(t *testing.T) {
	before := map[int]time.Duration{1: time.Second, 2: 2 * time.Second}
	after := map[int]time.Duration{1: 3 * time.Second, 3: time.Second} // 2 exited, 3 is new
	if got := CPUDelta(before, after); got != 3*time.Second {
		t.Errorf("CPUDelta = %v, want 3s (2s of backend 1, 1s of new backend 3)", got)
	}
}
