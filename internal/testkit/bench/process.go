package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child server. Its first stdout line is kept (our own
// servers announce their address there) and the tail of its stderr is kept
// for error messages.
type process struct {
	name    string
	cmd     *exec.Cmd
	stdout  *firstLine
	stderr  *tail
	exited  chan struct{}
	waitErr error
}

// startProcess starts path with args and exactly env (nothing inherited,
// so the caller's OTEL_* or DATABASE_URL cannot change what is measured).
func startProcess(name, path string, args, env []string) (*process, error) {
	p := &process{name: name, stdout: &firstLine{ready: make(chan string, 1)}, stderr: &tail{max: 8 << 10},
		exited: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// listenURL waits for the "listening URL" line.
func (p *process) listenURL(timeout time.Duration) (string, error) {
	select {
	case line := <-p.stdout.ready:
		u, ok := strings.CutPrefix(line, "listening ")
		if !ok {
			return "", fmt.Errorf("%s: unexpected first line %q", p.name, line)
		}
		return u, nil
	case <-p.exited:
		return "", p.died()
	case <-time.After(timeout):
		return "", fmt.Errorf("%s did not announce its address within %s", p.name, timeout)
	}
}

func (p *process) died() error {
	return fmt.Errorf("%s exited (%v): %s", p.name, p.waitErr, strings.TrimSpace(p.stderr.String()))
}

// waitReady polls url every 50 ms until it answers 200.
func (p *process) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	return p.pollReady(ctx, url, timeout, 50*time.Millisecond)
}

// pollReady polls url every interval until it answers 200.
func (p *process) pollReady(ctx context.Context, url string, timeout, interval time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("readiness request: %w", err)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return p.died()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s within %s: %s", p.name, url, timeout, strings.TrimSpace(p.stderr.String()))
		case <-time.After(interval):
		}
	}
}

// stop sends SIGTERM, waits up to 15 s, then kills. It returns an error
// only when the process had to be killed or exited unexpectedly early.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return p.died()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s ignored SIGTERM for 15s and was killed", p.name)
	}
}

// firstLine is a stdout that hands its first line to ready.
type firstLine struct {
	mu    sync.Mutex
	buf   []byte
	sent  bool
	ready chan string
}

func (f *firstLine) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent {
		return len(b), nil
	}
	f.buf = append(f.buf, b...)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
		f.ready <- strings.TrimSpace(string(f.buf[:i]))
		f.sent = true
		f.buf = nil
	}
	return len(b), nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// freePort returns a free TCP port on 127.0.0.1 below the kernel's
// ephemeral range (32768+), so the load generator's own outgoing
// connections can never take it before the child binds it.
func freePort() (int, error) {
	for range 200 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = ln.Close()
		return port, nil
	}
	return 0, errors.New("no free port between 20000 and 32000 on 127.0.0.1")
}
