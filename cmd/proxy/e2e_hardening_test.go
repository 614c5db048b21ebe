package main

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawExchange sends raw bytes to the proxy and returns everything it
// answers until it closes the connection or 5 s pass.
func rawExchange(t *testing.T, base, raw string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// statusOf returns the status code of a raw HTTP/1.1 answer, 0 if none.
func statusOf(answer string) int {
	var code int
	if _, err := fmt.Sscanf(answer, "HTTP/1.1 %d", &code); err != nil {
		return 0
	}
	return code
}

func (u *fakeUpstream) seenPaths() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.paths...)
}

// TestRequestsAreReadAsTheUpstreamReadsThem covers SPEC §6.1's request
// rules: canonical paths only, the method list, the request-target bound,
// credentials behind a foreign Authorization scheme, the headers that stay
// here, and JSON bodies inspected whatever their Content-Type.
func TestRequestsAreReadAsTheUpstreamReadsThem(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	pid := g.project(t, "rules", "openai", g.up.URL+"/v1")
	_, secret := g.token(t, pid, nil)
	auth := "Authorization: Bearer " + secret + "\r\n"

	t.Run("paths", func(t *testing.T) {
		for _, target := range []string{
			"/v1/../../tenant-b/x", "/v1/%2e%2e/%2e%2e/tenant-b/x", "/v1/.%2E/x", "/v1/..%2fx", "/v1/a%2Fb",
			"/v1//chat/completions", "/v1/./chat/completions", "/v1/chat/completions/", "/v1/a%5cb", "/v1/a%00b",
		} {
			answer := rawExchange(t, g.p.addr, "POST "+target+" HTTP/1.1\r\nHost: x\r\n"+auth+
				"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
			if code := statusOf(answer); code != http.StatusBadRequest || !strings.Contains(answer, "invalid_path") {
				t.Errorf("%s: got %q, want 400 invalid_path", target, firstLine(answer))
			}
		}
		if paths := g.up.seenPaths(); len(paths) != 0 {
			t.Errorf("upstream was sent %q", paths)
		}
	})

	t.Run("methods", func(t *testing.T) {
		for _, m := range []string{"TRACE", "PROPFIND", "CONNECT", "FOO"} {
			answer := rawExchange(t, g.p.addr, m+" /v1/models HTTP/1.1\r\nHost: x\r\n"+auth+"Connection: close\r\n\r\n")
			if code := statusOf(answer); code != http.StatusMethodNotAllowed && code != http.StatusBadRequest {
				t.Errorf("%s: got %q, want 405", m, firstLine(answer))
			}
			if strings.Contains(answer, upstreamKey) {
				t.Errorf("%s: the upstream key came back: %q", m, answer)
			}
		}
		answer := rawExchange(t, g.p.addr, "OPTIONS /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if code := statusOf(answer); code != http.StatusNoContent {
			t.Errorf("OPTIONS: got %q, want 204", firstLine(answer))
		}
		if paths := g.up.seenPaths(); len(paths) != 0 {
			t.Errorf("upstream was sent %q", paths)
		}
	})

	t.Run("request target bound", func(t *testing.T) {
		for _, tc := range []struct {
			n    int
			want int
		}{{10 << 10, http.StatusRequestURITooLong}, {100 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
			answer := rawExchange(t, g.p.addr, "GET /v1/"+strings.Repeat("a", tc.n)+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			if code := statusOf(answer); code != tc.want {
				t.Errorf("%d-byte path: got %q, want %d", tc.n, firstLine(answer), tc.want)
			}
		}
	})

	t.Run("basic authorization does not hide x-api-key", func(t *testing.T) {
		req, _ := http.NewRequest("GET", g.p.addr+"/v1/models", nil)
		req.Header.Set("Authorization", "Basic dXNlcjpwdw==")
		req.Header.Set("x-api-key", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d, want 200", resp.StatusCode)
		}
	})

	t.Run("client headers that stay here", func(t *testing.T) {
		req, _ := http.NewRequest("GET", g.p.addr+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		for _, h := range []string{"OpenAI-Organization", "OpenAI-Project", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Real-IP"} {
			req.Header.Set(h, "client-chosen")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen := g.up.headers()
		last := seen[len(seen)-1]
		for k := range last {
			if strings.HasPrefix(k, "X-Forwarded-") || k == "Forwarded" || k == "X-Real-Ip" || strings.HasPrefix(k, "Openai-") {
				t.Errorf("upstream got %s: %q", k, last[k])
			}
		}
	})

	t.Run("text/plain JSON is inspected", func(t *testing.T) {
		body := `{"model":"gpt-4o-mini","str\u0065am":true,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 800) + `"}]}`
		req, _ := http.NewRequest("POST", g.p.addr+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(answer), `"usage"`) {
			t.Errorf("the usage chunk the proxy asked for reached the client: %s", answer)
		}
		var r usageRow
		waitFor(t, 10*time.Second, "the chat's usage row", func() bool {
			for _, row := range g.usageRows(t) {
				if row.Endpoint == "/v1/chat/completions" {
					r = row
					return true
				}
			}
			return false
		})
		if !r.Streamed || r.Prompt != 800 || r.Completion != len(streamWords) {
			t.Errorf("usage row %+v, want a streamed row with the upstream's usage (800 prompt tokens)", r)
		}
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestSlowBodiesAreCut: a request body that never arrives holds its
// connection no longer than REQUEST_BODY_TIMEOUT, authenticated (408) or not
// (401 or 429 at once, then closed), and /readyz keeps answering while 2,000 of
// them are open.
func TestSlowBodiesAreCut(t *testing.T) {
	const timeout = time.Second
	g := newReleaseGateway(t, "REQUEST_BODY_TIMEOUT=1s") // a timing claim: measured without the race detector
	pid := g.project(t, "slow", "openai", g.up.URL)
	_, secret := g.token(t, pid, nil)
	// Known before the unauthenticated half gets the address blocked: a
	// blocked address may only use tokens the proxy has already served.
	if code, _ := chat(t, g.p.addr, secret, "gpt-4o-mini"); code != http.StatusOK {
		t.Fatalf("chat: %d", code)
	}
	u, _ := url.Parse(g.p.addr)

	const n = 2000
	conns := make([]net.Conn, 0, n)
	sent := make([]time.Time, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		head := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
		if i%2 == 0 {
			head += "Authorization: Bearer " + secret + "\r\n"
		}
		if _, err := io.WriteString(c, head+"\r\n"); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		sent = append(sent, time.Now())
	}

	stopReady := make(chan struct{})
	var readyFailures, readyCalls atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stopReady:
				return
			default:
			}
			resp, err := client.Get(g.p.addr + "/readyz")
			readyCalls.Add(1)
			if err != nil || resp.StatusCode != http.StatusOK {
				readyFailures.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
		}
	})

	var cut atomic.Int64
	var wrong sync.Map
	var readers sync.WaitGroup
	for i, c := range conns {
		readers.Go(func() {
			_ = c.SetReadDeadline(sent[i].Add(timeout + time.Second))
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				wrong.Store(i, "no answer: "+err.Error())
				return
			}
			// Without a token the answer is 401 at once (429 past
			// AUTH_FAILURE_LIMIT); either way the connection must be
			// closed by the deadline.
			ok := strings.HasPrefix(line, "HTTP/1.1 408")
			if i%2 == 1 {
				ok = strings.HasPrefix(line, "HTTP/1.1 401") || strings.HasPrefix(line, "HTTP/1.1 429")
			}
			if line != "" && !ok {
				wrong.Store(i, line)
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				wrong.Store(i, "not closed: "+err.Error())
				return
			}
			cut.Add(1)
		})
	}
	readers.Wait() // each reader gives up at its deadline
	close(stopReady)
	wg.Wait()
	if got := cut.Load(); got != n {
		examples := 0
		wrong.Range(func(k, v any) bool {
			t.Logf("connection %v: %v", k, v)
			examples++
			return examples < 5
		})
		t.Errorf("%d of %d slow-body connections were answered and closed within REQUEST_BODY_TIMEOUT + 1 s", got, n)
	}
	if readyCalls.Load() == 0 || readyFailures.Load() > 0 {
		t.Errorf("/readyz: %d of %d calls failed while the slow bodies were open", readyFailures.Load(), readyCalls.Load())
	}

	// The management API's bodies are bounded the same way.
	answer := rawExchange(t, g.p.addr, "POST /manage/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+mgmtToken+
		"\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"name\":")
	if code := statusOf(answer); code != http.StatusRequestTimeout {
		t.Errorf("management call with a slow body: %q, want 408", firstLine(answer))
	}
}

// brokenUpstream answers every request with head and then closes the
// connection: a body or stream that breaks off.
func brokenUpstream(t *testing.T, head string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				req, err := http.ReadRequest(r)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, head)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestTruncatedAnswersAreNotMadeComplete: an upstream that breaks off its
// body or stream is relayed as a broken response (no terminating chunk),
// and the usage row says what happened.
func TestTruncatedAnswersAreNotMadeComplete(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	cases := []struct{ name, head string }{
		{"chunked JSON", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"10\r\n{\"id\":\"chatcmpl-\r\n"},
		{"SSE", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"51\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"model\":\"gpt-4o-mini\"}\n\n\r\n"},
		{"short Content-Length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"id\":\"chatcmpl-1\""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pid := g.project(t, fmt.Sprintf("broken-%d", i), "openai", brokenUpstream(t, tc.head))
			_, secret := g.token(t, pid, nil)
			req, _ := http.NewRequest("POST", g.p.addr+"/v1/chat/completions",
				strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[]}`))
			req.Header.Set("Authorization", "Bearer "+secret)
			// Nothing flushed yet: the connection closes before the head
			// (a transport error); else the body fails to read.
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Errorf("status %d and a body that reads as complete; want a read error", resp.StatusCode)
				}
			}
			rows := g.waitUsage(t, i+1)
			if r := rows[len(rows)-1]; r.Status != http.StatusBadGateway {
				t.Errorf("usage row %+v, want status 502", r)
			}
		})
	}
}

// TestStreamCutAtShutdownGraceIsRecorded: a stream still running when
// SHUTDOWN_GRACE ends gets its usage row (499, what was produced) before
// the process exits.
func TestStreamCutAtShutdownGraceIsRecorded(t *testing.T) {
	t.Parallel()
	g := newGateway(t, "SHUTDOWN_GRACE=300ms")
	pid := g.project(t, "grace", "openai", g.up.URL)
	_, secret := g.token(t, pid, nil)
	req, _ := http.NewRequest("POST", g.p.addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"slow","stream":true,"messages":[{"role":"user","content":"count"}]}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "data: ") {
	}
	g.p.terminate(t)
	if code := g.p.exitCode(); code != 0 {
		t.Errorf("exit status %d\n%s", code, g.p.output.String())
	}
	rows := g.usageRows(t)
	if len(rows) != 1 || rows[0].Status != 499 || !rows[0].Streamed || rows[0].Completion < 1 || rows[0].Completion >= 10 {
		t.Errorf("usage rows %+v, want one streamed row with status 499 and 1..9 completion tokens", rows)
	}
}

// rss returns the process's resident set in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// dbBytes is the size of the proxy's SQLite database with its WAL.
func (g *gateway) dbBytes(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(filepath.Join(g.dir, "var", "db", "proxy.db"+suffix)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestFailedAuthenticationsAreLimitedAndSummarised: 1,000 failed
// authentications with long paths from one address cost almost no disk and
// memory, are refused with 429 past AUTH_FAILURE_LIMIT, leave the
// address's valid token working, and are audited as summary rows.
func TestFailedAuthenticationsAreLimitedAndSummarised(t *testing.T) {
	t.Parallel()
	g := newReleaseGateway(t) // its memory is measured as the process's RSS
	pid := g.project(t, "attacked", "openai", g.up.URL)
	_, secret := g.token(t, pid, nil)
	if code, _ := chat(t, g.p.addr, secret, "gpt-4o-mini"); code != http.StatusOK {
		t.Fatalf("valid token before the attack: %d", code)
	}
	dbBefore, rssBefore := g.dbBytes(t), rss(t, g.p.cmd.Process.Pid)

	longPath := "/v1/" + strings.Repeat("a", 8000)
	statuses := map[int]int{}
	// Failures are counted per minute: a run that crosses into the next
	// window may take another AUTH_FAILURE_LIMIT of 401s there.
	firstWindow := time.Now().Unix() / 60
	for i := range 1000 {
		req, _ := http.NewRequest("POST", g.p.addr+longPath, strings.NewReader(`{"model":"x"}`))
		req.Header.Set("Authorization", fmt.Sprintf("Bearer sk-guess-%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		if i == 500 {
			if code, _ := chat(t, g.p.addr, secret, "gpt-4o-mini"); code != http.StatusOK {
				t.Errorf("valid token during the attack: %d, want 200", code)
			}
		}
	}
	allowed := 20 * int(time.Now().Unix()/60-firstWindow+1)
	if statuses[http.StatusUnauthorized] > allowed || statuses[http.StatusTooManyRequests] < 1000-allowed {
		t.Errorf("statuses %v, want at most AUTH_FAILURE_LIMIT (20) 401s per minute window (%d here) and the rest 429", statuses, allowed)
	}
	if grew := g.dbBytes(t) - dbBefore; grew > 1<<20 {
		t.Errorf("database grew by %d bytes, want < 1 MiB", grew)
	}
	if grew := rss(t, g.p.cmd.Process.Pid) - rssBefore; grew > 50<<20 {
		t.Errorf("process grew by %d bytes, want < 50 MiB", grew)
	}

	g.p.stop(t) // the last window's summary is written at shutdown
	db, err := sql.Open("sqlite", "file:"+filepath.Join(g.dir, "var", "db", "proxy.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT length(path), metadata FROM audit_events WHERE action = 'proxy.auth'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n, total int
	for rows.Next() {
		var pathLen int
		var meta string
		if err := rows.Scan(&pathLen, &meta); err != nil {
			t.Fatal(err)
		}
		var md struct {
			Count int `json:"count"`
		}
		if err := json.Unmarshal([]byte(meta), &md); err != nil {
			t.Fatal(err)
		}
		if pathLen > 512 {
			t.Errorf("audited path of %d bytes, want at most 512", pathLen)
		}
		n++
		total += md.Count
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// Two rows per one-minute window: the first failure and the summary.
	if n == 0 || n > 4 || total != 1000 {
		t.Errorf("%d audit rows counting %d failures, want at most 4 rows (two windows) counting 1000", n, total)
	}
}
