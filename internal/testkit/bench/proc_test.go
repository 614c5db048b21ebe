package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"plain", "1234 (proxy) S 1 1234 1234 0 -1 4194560 1500 0 0 0 250 75 0 0 20 0 9 0 100 2000000 3000 18446744073709551615",
			3250 * time.Millisecond, false},
		{"name with spaces and parens", "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 1 1 1", 100 * time.Millisecond, false},
		{"no name", "42 R 1", 0, true},
		{"truncated", "42 (x) R 1 2 3", 0, true},
		{"not a number", "42 (x) R 1 42 42 0 -1 0 0 0 0 0 x 3 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseStat error = %v, want error %t", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseStat = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tproxy\nVmPeak:\t 1000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n"
	got, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Memory{RSS: 20 << 20, Peak: 40 << 20}); got != want {
		t.Errorf("ParseStatus = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"VmRSS:\t1 kB\n", "VmRSS:\t1 MB\nVmHWM:\t1 kB\n", "VmRSS:\tx kB\nVmHWM:\t1 kB\n"} {
		if _, err := ParseStatus([]byte(bad)); err == nil {
			t.Errorf("ParseStatus(%q) accepted it", bad)
		}
	}
}

// The live readers work on this very process, and ResetPeak brings the
// high-water mark down once memory has been returned to the OS.
func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = 1
	}
	cpu, err := CPUTime(pid)
	if err != nil || cpu <= 0 {
		t.Fatalf("CPUTime after touching 64 MB = %v, %v; want > 0", cpu, err)
	}
	before, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if before.RSS < 64<<20 || before.Peak < before.RSS {
		t.Fatalf("ReadMemory = %+v with 64 MB live; want 64 MB <= RSS <= Peak", before)
	}
	runtime.KeepAlive(big)
	big = nil
	debug.FreeOSMemory()
	if err := ResetPeak(pid); err != nil {
		if strings.Contains(err.Error(), "permission") {
			t.Skipf("clear_refs not writable here: %v", err)
		}
		t.Fatal(err)
	}
	after, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after.Peak > before.Peak-32<<20 {
		t.Errorf("peak after freeing 64 MB and ResetPeak = %d, want below %d", after.Peak, before.Peak-32<<20)
	}
}
