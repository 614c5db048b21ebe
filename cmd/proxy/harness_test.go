package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the proxy and migrate binaries built once for the
// end-to-end tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, pkg := range []string{"proxy", "migrate"} {
		cmd := exec.Command("go", "build", "-race", "-o", filepath.Join(dir, pkg), "../"+pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output for assertions.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running proxy binary.
type proc struct {
	cmd    *exec.Cmd
	addr   string // http://127.0.0.1:port
	output *syncBuffer
	done   chan struct{}
	err    error
}

// baseEnv is the environment every test proxy starts from: the test's own
// environment minus any database or proxy settings it might carry.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k := kv[:strings.IndexByte(kv, '=')]
		if strings.HasPrefix(k, "DATABASE_") || strings.HasPrefix(k, "DB_") || strings.HasPrefix(k, "REDIS_") ||
			k == "MANAGEMENT_TOKEN" || k == "ENCRYPTION_KEY" || k == "LISTEN_ADDR" || k == "CONFIG_FILE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startProxy runs the proxy binary with env (KEY=value) on a free port and
// waits until it logs its address. It is stopped with SIGTERM at cleanup.
func startProxy(t *testing.T, dir string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "proxy"))
	cmd.Dir = dir
	cmd.Env = baseEnv(append([]string{"LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "DRAIN_DELAY=0s"}, env...)...)
	pr, pw := io.Pipe()
	p := &proc{cmd: cmd, output: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.output
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.output.Write([]byte(line + "\n"))
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addrCh <- rec.Addr
			}
		}
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	select {
	case addr := <-addrCh:
		p.addr = "http://" + addr
	case <-p.done:
		t.Fatalf("proxy exited during start-up: %v\n%s", p.err, p.output.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("proxy did not start within 60s:\n%s", p.output.String())
	}
	return p
}

// stop sends SIGTERM and waits for the process to exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("proxy did not stop within 60s after SIGTERM:\n%s", p.output.String())
	}
}

// exitCode waits for the process and returns its exit status.
func (p *proc) exitCode() int {
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// runBinary runs proxy or migrate to completion and returns its exit status
// and combined output.
func runBinary(t *testing.T, dir, name string, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Dir = dir
	cmd.Env = baseEnv(env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		t.Fatalf("run %s %v: %v\n%s", name, args, err, out)
		return -1, ""
	}
}

// call sends a JSON request and decodes a JSON response into out (when not
// nil), returning the status.
func call(t *testing.T, method, url, bearer string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
