package invalidate

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a Target that reports every call on events as "t:<id>",
// "p:<id>" or "flush".
type recorder struct {
	events chan string
}

func newRecorder() *recorder { return &recorder{events: make(chan string, 4096)} }

func (r *recorder) InvalidateToken(id string)   { r.events <- "t:" + id }
func (r *recorder) InvalidateProject(id string) { r.events <- "p:" + id }
func (r *recorder) Flush()                      { r.events <- "flush" }

// await waits up to timeout for event, skipping others, and returns how
// long it took.
func (r *recorder) await(t *testing.T, event string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-r.events:
			if e == event {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("no %q within %s", event, timeout)
		}
	}
}

// recorded reports whether event is among the events recorded so far
// (which it consumes).
func (r *recorder) recorded(event string) bool {
	found := false
	for {
		select {
		case e := <-r.events:
			found = found || e == event
		default:
			return found
		}
	}
}

// drain discards the events recorded so far.
func (r *recorder) drain() {
	for {
		select {
		case <-r.events:
		default:
			return
		}
	}
}

// run starts b.Run and stops it when the test ends, checking that it
// returns nil promptly.
func run(t *testing.T, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancellation")
		}
	})
}

// forwarder is a TCP proxy in front of a server that a test can cut (close
// every open connection) or turn into a black hole (accept, never answer).
type forwarder struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	blackhole bool

	wg sync.WaitGroup
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Go(f.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		f.cut()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

// cut closes every connection open through the forwarder; new ones are
// still accepted.
func (f *forwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}

func (f *forwarder) setBlackhole(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blackhole = on
}

func (f *forwarder) track(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
}

func (f *forwarder) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		blackhole := f.blackhole
		f.mu.Unlock()
		if blackhole {
			f.track(c)
			f.wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
			continue
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		f.track(c, up)
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		f.wg.Go(func() { pipe(up, c) })
		f.wg.Go(func() { pipe(c, up) })
	}
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
