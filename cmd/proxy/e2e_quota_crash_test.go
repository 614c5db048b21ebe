package main

import (
	"net/http"
	"syscall"
	"testing"
)

// TestMaxRequestsSurvivesSIGKILL kills a SQLite proxy with SIGKILL in the
// middle of a reserved block and restarts it on the same database: the two
// lives together never serve more than max_requests (SPEC §7). A SIGTERM
// then leaves request_count equal to what was served.
func TestMaxRequestsSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	const maxRequests, first = 100, 37 // 37 is mid-block: three blocks of 16 reserved
	g := newBinaryGateway(t)
	pid := g.project(t, "crash", "openai", g.up.URL)
	tid, secret := g.token(t, pid, map[string]any{"max_requests": maxRequests})
	served := func(n int) int {
		ok := 0
		for range n {
			switch code, body := chat(t, g.p.addr, secret, "gpt-4o-mini"); code {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("chat: %d %s", code, body)
			}
		}
		return ok
	}
	if got := served(first); got != first {
		t.Fatalf("%d of %d served before the kill", got, first)
	}
	if err := g.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g.p.done

	g.p = startProxy(t, g.dir, "MANAGEMENT_TOKEN="+mgmtToken, "USAGE_FLUSH_INTERVAL=100ms")
	second := served(2 * maxRequests)
	if first+second > maxRequests {
		t.Fatalf("%d + %d served across SIGKILL, more than max_requests %d", first, second, maxRequests)
	}
	if second != maxRequests-48 {
		t.Fatalf("%d served after the kill, want %d (the 11 unserved of the killed block are lost)", second, maxRequests-48)
	}

	// Graceful: a token part-way through a block, then SIGTERM.
	tid2, secret2 := g.token(t, pid, map[string]any{"max_requests": maxRequests})
	for range 5 {
		if code, body := chat(t, g.p.addr, secret2, "gpt-4o-mini"); code != http.StatusOK {
			t.Fatalf("chat: %d %s", code, body)
		}
	}
	g.p.stop(t)
	g.p = startProxy(t, g.dir, "MANAGEMENT_TOKEN="+mgmtToken, "USAGE_FLUSH_INTERVAL=100ms")
	for _, tc := range []struct {
		id   string
		want int64
	}{{tid, 100}, {tid2, 5}} {
		var out struct {
			RequestCount int64 `json:"request_count"`
		}
		if code := g.manage(t, "GET", "/tokens/"+tc.id, nil, &out); code != http.StatusOK || out.RequestCount != tc.want {
			t.Errorf("token %s after SIGTERM: status %d, request_count %d; want %d", tc.id, code, out.RequestCount, tc.want)
		}
	}
}
