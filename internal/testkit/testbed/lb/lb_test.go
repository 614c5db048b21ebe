package lb_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/testbed/lb"
)

// backend answers its name on every path and 200 or 503 on /readyz.
type backend struct {
	*httptest.Server
	name  string
	ready atomic.Bool
	hits  atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.ready.Store(true)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if !b.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", b.name, body)
	}))
	t.Cleanup(b.Close)
	return b
}

func startLB(t *testing.T, backends ...string) *lb.Balancer {
	t.Helper()
	b, err := lb.Start("127.0.0.1:0", lb.Options{Backends: backends, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func send(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Post(url+"/v1/x", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	return string(raw)
}

func TestRoundRobinSkipsUnready(t *testing.T) {
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	l := startLB(t, a.URL, b.URL, c.URL)
	for range 9 {
		if got := send(t, l.URL); !strings.HasSuffix(got, ":body") {
			t.Fatalf("answer %q does not carry the request body", got)
		}
	}
	for _, be := range []*backend{a, b, c} {
		if n := be.hits.Load(); n != 3 {
			t.Errorf("backend %s got %d of 9 requests, want 3", be.name, n)
		}
	}
	b.ready.Store(false)
	deadline := time.Now().Add(2 * time.Second)
	for l.Ready(1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l.Ready(1) {
		t.Fatal("backend b still ready 2s after its /readyz turned 503")
	}
	before := b.hits.Load()
	for range 6 {
		send(t, l.URL)
	}
	if n := b.hits.Load() - before; n != 0 {
		t.Errorf("unready backend b got %d requests", n)
	}
}

func TestSkipsDeadBackend(t *testing.T) {
	a := newBackend(t, "a")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	l := startLB(t, dead, a.URL)
	for range 4 {
		if got := send(t, l.URL); got != "a:body" {
			t.Errorf("answer %q, want a:body", got)
		}
	}
	// The dead backend fails its first health check, so it is never tried.
	if l.Retries() != 0 || l.Ready(0) {
		t.Errorf("retries %d, dead backend ready %t; want 0, false", l.Retries(), l.Ready(0))
	}
}

func TestRetryOnDialErrorWhenAllUnready(t *testing.T) {
	// With no backend ready the balancer tries every backend in turn; the
	// one refusing connections must be skipped by a retry, not a 502.
	a := newBackend(t, "a")
	a.ready.Store(false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	l := startLB(t, dead, a.URL)
	for range 4 {
		if got := send(t, l.URL); got != "a:body" {
			t.Errorf("answer %q, want a:body", got)
		}
	}
	if l.Retries() != 2 {
		t.Errorf("retries %d, want 2 (every other request picks the dead backend first)", l.Retries())
	}
}

func TestStreamsPassThrough(t *testing.T) {
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	l := startLB(t, srv.URL)
	resp, err := http.Get(l.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	for i := range 3 {
		// Each event must arrive before the backend sends the next one.
		line, err := rd.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		_, _ = rd.ReadString('\n')
		next <- struct{}{}
	}
}
