package bench

import (
	"testing"
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
