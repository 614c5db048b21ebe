package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/syncbuf"
)

// The -race proxy binary is built once, on first use
// (binaries.ForTest): only the tests that prove the binary itself (exit
// statuses, signals, its memory) need it; the others call run in process,
// whose readiness re-reads the schema every 200 ms instead of every 10 s.
func TestMain(m *testing.M) {
	schemaProbeInterval = 200 * time.Millisecond
	code := m.Run()
	if err := binaries.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// proc is a running proxy: run called in process, or the binary.
type proc struct {
	addr   string // http://127.0.0.1:port
	output *syncbuf.Buffer
	done   chan struct{}
	err    error              // run's error, or the binary's exit
	cancel context.CancelFunc // in process: what SIGTERM does to the binary
	cmd    *exec.Cmd          // the binary; nil in process
}

// baseEnv is the environment every test proxy starts from: the test's own
// environment minus any database or proxy settings it might carry. A -race
// binary would otherwise wait a second at exit for late race reports.
func baseEnv(extra ...string) []string {
	env := []string{"GORACE=atexit_sleep_ms=0"}
	for _, kv := range os.Environ() {
		k := kv[:strings.IndexByte(kv, '=')]
		if strings.HasPrefix(k, "DATABASE_") || strings.HasPrefix(k, "DB_") || strings.HasPrefix(k, "REDIS_") || k == "GORACE" ||
			k == "MANAGEMENT_TOKEN" || k == "ENCRYPTION_KEY" || k == "LISTEN_ADDR" || k == "CONFIG_FILE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proxyEnv is the environment of a test proxy on a free port: baseEnv with
// env (KEY=value) on top.
func proxyEnv(env []string) []string {
	return baseEnv(append([]string{"LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "DRAIN_DELAY=0s"}, env...)...)
}

// startProxy calls run in process with env (KEY=value) on a free port and
// waits until it logs its address. Without DATABASE_URL its SQLite database
// is dir/var/db/proxy.db, where the binary started in dir would put it.
// Cancelling run's context, as SIGTERM does for the binary, stops it at
// cleanup.
func startProxy(t *testing.T, dir string, env ...string) *proc {
	t.Helper()
	vars := map[string]string{"DATABASE_URL": "sqlite:///" + filepath.Join(dir, "var", "db", "proxy.db")}
	for _, kv := range proxyEnv(env) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{output: &syncbuf.Buffer{}, done: make(chan struct{}), cancel: cancel}
	pr, pw := io.Pipe()
	go func() {
		p.err = run(ctx, nil, func(k string) string { return vars[k] }, p.output, pw)
		pw.Close()
		close(p.done)
	}()
	return p.awaitAddr(t, pr)
}

// startBinary runs the -race proxy binary in dir with env (KEY=value) on a
// free port and waits until it logs its address. It is stopped with SIGTERM
// at cleanup.
func startBinary(t *testing.T, dir string, env ...string) *proc {
	t.Helper()
	return startExecutable(t, binaries.ForTest(t, true).Proxy, dir, env...)
}

// startReleaseBinary is startBinary with the proxy built as `make build`
// builds it, without the race detector: for the tests that measure time
// or memory under load, as the cluster test bed does.
func startReleaseBinary(t *testing.T, dir string, env ...string) *proc {
	t.Helper()
	return startExecutable(t, binaries.ForTest(t, false).Proxy, dir, env...)
}

func startExecutable(t *testing.T, path, dir string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Dir = dir
	cmd.Env = proxyEnv(env)
	pr, pw := io.Pipe()
	p := &proc{cmd: cmd, output: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout = p.output
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	return p.awaitAddr(t, pr)
}

// awaitAddr copies the log lines from logs into the output and returns p
// once the "listening" line names its address.
func (p *proc) awaitAddr(t *testing.T, logs io.Reader) *proc {
	t.Helper()
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(logs)
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
		// Drain what a binary writes after its pipe reader gave up.
		_, _ = io.Copy(io.Discard, logs)
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

// terminate asks the proxy to drain and stop: SIGTERM to the binary, the
// cancelled context SIGTERM becomes in main to run in process.
func (p *proc) terminate(t *testing.T) {
	t.Helper()
	if p.cmd == nil {
		p.cancel()
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// stop terminates the proxy and waits for it to exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	p.terminate(t)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		if p.cmd != nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		t.Errorf("proxy did not stop within 60s after SIGTERM:\n%s", p.output.String())
	}
}

// exitCode waits for the proxy and returns its exit status.
func (p *proc) exitCode() int {
	<-p.done
	if p.cmd == nil {
		return config.ExitStatus(p.err)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// runBinary runs the proxy binary to completion and returns its exit status
// and combined output.
func runBinary(t *testing.T, dir string, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binaries.ForTest(t, true).Proxy, args...)
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
		t.Fatalf("run proxy %v: %v\n%s", args, err, out)
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

// migrateDB applies all migrations (steps 0) or rolls back steps of them
// on the database at dsn, as the migrate binary would.
func migrateDB(t *testing.T, dsn string, down int) {
	t.Helper()
	m, err := schema.New(t.Context(), schema.DriverPostgres, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if down > 0 {
		err = m.Down(t.Context(), down)
	} else {
		err = m.Up(t.Context())
	}
	if err != nil {
		t.Fatalf("migrate (down %d): %v", down, err)
	}
}
