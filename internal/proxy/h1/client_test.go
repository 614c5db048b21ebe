package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/proxy/h1"
)

// server is an httptest.Server that counts the connections it accepted.
type server struct {
	*httptest.Server
	conns atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// wantConns fails the test unless the server accepted exactly n
// connections.
func (s *server) wantConns(t *testing.T, n int64) {
	t.Helper()
	if got := s.conns.Load(); got != n {
		t.Fatalf("%d connections, want %d", got, n)
	}
}

func newClient(t *testing.T, opts h1.Options) *h1.Client {
	t.Helper()
	c := h1.New(opts)
	t.Cleanup(c.Close)
	return c
}

func mustURL(t testing.TB, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// do sends req and reads the whole body.
func do(t *testing.T, c *h1.Client, req *h1.Request) (*h1.Response, string) {
	t.Helper()
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatalf("Do(%s %s): %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func TestRequestReachesServerAsSent(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, uri, host, body string
		header                  http.Header
		length                  int64
	}
	got := make(chan seen, 1)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, string(b), r.Header, r.ContentLength}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	c := newClient(t, h1.Options{})
	body := []byte(`{"model":"m"}`)
	resp, text := do(t, c, &h1.Request{
		Method: http.MethodPost,
		URL:    mustURL(t, s.URL+"/v1/chat/completions?api-version=1&x=a%20b"),
		Header: http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}, "Connection": {"close"}, "Content-Length": {"999"}},
		Body:   body,
	})
	if resp.StatusCode != http.StatusOK || text != `{"ok":true}` || resp.ContentLength != int64(len(text)) {
		t.Fatalf("response %d %q (length %d)", resp.StatusCode, text, resp.ContentLength)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if m := resp.Header["X-Multi"]; len(m) != 2 || m[0] != "a" || m[1] != "b" {
		t.Errorf("X-Multi %q, want both values in order", m)
	}
	r := <-got
	u := mustURL(t, s.URL)
	if r.method != http.MethodPost || r.uri != "/v1/chat/completions?api-version=1&x=a%20b" || r.host != u.Host || r.body != string(body) || r.length != int64(len(body)) {
		t.Errorf("server saw %+v", r)
	}
	if r.header.Get("Authorization") != "Bearer k" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.header)
	}
	if r.header.Get("Connection") != "" {
		t.Errorf("the client's own hop-by-hop header went out: Connection %q", r.header.Get("Connection"))
	}
}

func TestConnectionsAreReused(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strings.Repeat("x", 10_000))
	})
	c := newClient(t, h1.Options{})
	for range 20 {
		_, text := do(t, c, &h1.Request{Method: http.MethodPost, URL: mustURL(t, s.URL+"/v1/x"), Body: []byte("{}")})
		if len(text) != 10_000 {
			t.Fatalf("body of %d bytes", len(text))
		}
	}
	s.wantConns(t, 1)
}

func TestChunkedBodyWithTrailersKeepsConnection(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		for i := range 5 {
			_, _ = io.WriteString(w, strings.Repeat(string(rune('a'+i)), 100))
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Checksum", "abc")
	})
	c := newClient(t, h1.Options{})
	for range 3 {
		resp, text := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
		if resp.ContentLength != -1 || len(text) != 500 || text[0] != 'a' || text[499] != 'e' {
			t.Fatalf("chunked body: length %d, %d bytes", resp.ContentLength, len(text))
		}
	}
	s.wantConns(t, 1)
}

func TestUnreadBodyClosesConnection(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 100_000))
	})
	c := newClient(t, h1.Options{})
	for range 2 {
		resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after Close succeeded")
		}
	}
	s.wantConns(t, 2)
}

func TestBodilessResponses(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	})
	c := newClient(t, h1.Options{})
	if resp, text := do(t, c, &h1.Request{Method: http.MethodHead, URL: mustURL(t, s.URL+"/head")}); resp.StatusCode != 200 || text != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, text)
	}
	if resp, text := do(t, c, &h1.Request{Method: http.MethodDelete, URL: mustURL(t, s.URL+"/204")}); resp.StatusCode != 204 || text != "" {
		t.Errorf("204: %d %q", resp.StatusCode, text)
	}
	s.wantConns(t, 1)
}

// The Client asks for no interim response, so it takes one as a broken
// upstream: the call fails and the connection is not used again.
func TestInterimResponseIsRefused(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			w.Header().Set("Link", "</a>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		_, _ = io.WriteString(w, "final")
	})
	c := newClient(t, h1.Options{})
	if resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL+"/early")}); !errors.Is(err, h1.ErrProtocol) {
		if err == nil {
			_ = resp.Body.Close()
		}
		t.Fatalf("after 103 Early Hints: error %v, want ErrProtocol", err)
	}
	if _, text := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)}); text != "final" {
		t.Fatalf("body %q", text)
	}
	s.wantConns(t, 2)
}

func TestStaleIdleConnectionIsNotUsed(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	c := newClient(t, h1.Options{})
	req := &h1.Request{Method: http.MethodPost, URL: mustURL(t, s.URL), Body: []byte("{}")}
	do(t, c, req)
	// The server drops its idle keep-alive connections (as an upstream's
	// idle timeout does); the pooled one is now dead.
	s.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if _, text := do(t, c, req); text != "ok" {
		t.Fatalf("body %q", text)
	}
	s.wantConns(t, 2)
}

func TestConnectionCloseIsHonoured(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, "bye")
	})
	c := newClient(t, h1.Options{})
	for range 3 {
		if _, text := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)}); text != "bye" {
			t.Fatalf("body %q", text)
		}
	}
	s.wantConns(t, 3)
}

// stallingServer sends first (when not empty) and then nothing until the
// test ends or the client goes away.
func stallingServer(t *testing.T, first string) *server {
	t.Helper()
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if first != "" {
			_, _ = io.WriteString(w, first)
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	return s
}

func TestCancelWhileWaitingForHeaders(t *testing.T) {
	t.Parallel()
	s := stallingServer(t, "")
	c := newClient(t, h1.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Do(ctx, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

func TestCancelWhileReadingBody(t *testing.T) {
	t.Parallel()
	s := stallingServer(t, "data: first\n\n")
	c := newClient(t, h1.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := c.Do(ctx, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "data: first") {
		t.Fatalf("first read %q, %v", buf[:n], err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("body read went on after cancel")
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	s := stallingServer(t, "")
	c := newClient(t, h1.Options{ResponseHeaderTimeout: 100 * time.Millisecond})
	_, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v, want a net.Error timeout", err)
	}
}

func TestUnreachableHostIsDialError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	c := newClient(t, h1.Options{})
	_, err = c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, "http://"+addr)})
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("error %v, want a dial *net.OpError", err)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	pool := s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c := newClient(t, h1.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	for range 3 {
		if _, text := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)}); text != "HTTP/1.1" {
			t.Fatalf("body %q", text)
		}
	}
	// TLS 1.3 session tickets arrive after the handshake; they must not make
	// the pooled connection look unusable.
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d TLS connections for 3 sequential requests, want 1", n)
	}
	untrusted := newClient(t, h1.Options{})
	if _, err := untrusted.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)}); err == nil {
		t.Fatal("a certificate from an unknown authority was accepted")
	}
}

func TestInvalidRequestsAreRefused(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(http.ResponseWriter, *http.Request) {})
	c := newClient(t, h1.Options{})
	for name, req := range map[string]*h1.Request{
		"newline in value":   {Method: http.MethodGet, URL: mustURL(t, s.URL), Header: http.Header{"X-A": {"a\r\nEvil: 1"}}},
		"space in name":      {Method: http.MethodGet, URL: mustURL(t, s.URL), Header: http.Header{"X A": {"a"}}},
		"bad method":         {Method: "GE T", URL: mustURL(t, s.URL)},
		"unsupported scheme": {Method: http.MethodGet, URL: mustURL(t, "ftp://example.com/")},
		"no host":            {Method: http.MethodGet, URL: &url.URL{Path: "/"}},
	} {
		if _, err := c.Do(context.Background(), req); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	s.wantConns(t, 0)
}

// rawServer answers every connection with fixed bytes.
func rawServer(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(nc, reply)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestMalformedResponses sends a few of the responses read_test.go checks
// in memory over TCP. Do fails with ErrProtocol.
func TestMalformedResponses(t *testing.T) {
	t.Parallel()
	for name, reply := range map[string]string{
		"not http":            "SSH-2.0-OpenSSH\r\n",
		"bad status":          "HTTP/1.1 2x0 OK\r\n\r\n",
		"bad header":          "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
		"bad length":          "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
		"conflicting lengths": "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"gzip encoding":       "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"switching protocols": "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"huge header":         "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, h1.Options{})
			resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, rawServer(t, reply))})
			if err == nil {
				_ = resp.Body.Close()
			}
			if !errors.Is(err, h1.ErrProtocol) {
				t.Fatalf("%q: error %v, want ErrProtocol", truncate(reply), err)
			}
		})
	}
}

// keepAliveServer answers each request on a connection it keeps open with
// reply(path), and counts the connections it accepted.
func keepAliveServer(t *testing.T, reply func(path string) string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					_, rest, _ := strings.Cut(line, " ")
					path, _, _ := strings.Cut(rest, " ")
					for line != "\r\n" {
						if line, err = br.ReadString('\n'); err != nil {
							return
						}
					}
					if _, err := io.WriteString(nc, reply(path)); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, nc := range open {
			_ = nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String(), &conns
}

// A response framed by both Transfer-Encoding and Content-Length is read
// by its chunks, but its connection is not used again.
func TestChunkedAndLengthIsNotPooled(t *testing.T) {
	t.Parallel()
	url, conns := keepAliveServer(t, func(path string) string {
		if path == "/both" {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	})
	c := newClient(t, h1.Options{})
	for _, path := range []string{"/", "/", "/both", "/"} {
		resp, text := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, url+path)})
		if text != "hello" || resp.Header.Get("Content-Length") != "" && path == "/both" {
			t.Fatalf("%s: body %q, Content-Length %q", path, text, resp.Header.Get("Content-Length"))
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

func TestShortBodyIsAnError(t *testing.T) {
	t.Parallel()
	c := newClient(t, h1.Options{})
	resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet,
		URL: mustURL(t, rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "abc" {
		t.Fatalf("read %q, %v; want abc and io.ErrUnexpectedEOF", b, err)
	}
}

func TestBodyUntilClose(t *testing.T) {
	t.Parallel()
	c := newClient(t, h1.Options{})
	_, text := do(t, c, &h1.Request{Method: http.MethodGet,
		URL: mustURL(t, rawServer(t, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"))})
	if text != "all of it" {
		t.Fatalf("body %q", text)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(bytes.ToUpper(b))
	})
	c := newClient(t, h1.Options{})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 50 {
				want := strings.Repeat(string(rune('a'+i)), j+1)
				resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodPost, URL: mustURL(t, s.URL), Body: []byte(want)})
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || string(b) != strings.ToUpper(want) {
					t.Errorf("got %q, %v; want %q", b, err, strings.ToUpper(want))
					return
				}
			}
		})
	}
	wg.Wait()
	if n := s.conns.Load(); n > 16 {
		t.Errorf("%d connections for 16 workers", n)
	}
}

func TestClosedClient(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	c := h1.New(h1.Options{})
	do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	c.Close()
	if _, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)}); !errors.Is(err, h1.ErrClosed) {
		t.Fatalf("error %v, want ErrClosed", err)
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// A pooled connection reuses its header map; values handed out before stay
// intact.
func TestHeaderValuesSurviveReuse(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-N", strconv.FormatInt(n.Add(1), 10))
		_, _ = io.WriteString(w, "ok")
	})
	c := newClient(t, h1.Options{})
	first, _ := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	kept := first.Header["X-N"]
	second, _ := do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	if kept[0] != "1" || second.Header.Get("X-N") != "2" {
		t.Fatalf("values %q then %q, want 1 then 2", kept, second.Header["X-N"])
	}
	s.wantConns(t, 1)
}

// Connections left idle past IdleTimeout are closed even when no further
// request goes to their host.
func TestIdleConnectionsAreSwept(t *testing.T) {
	t.Parallel()
	var closed atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	c := newClient(t, h1.Options{IdleTimeout: 50 * time.Millisecond})
	do(t, c, &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was still open 5s after its 50ms idle timeout")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A burst of small chunks that arrived together (SSE events written in one
// go) comes back from one Read, so the relay above flushes once per burst
// rather than once per chunk.
func TestBufferedChunksComeBackTogether(t *testing.T) {
	events := []string{"data: 1\n\n", "data: 2\n\n", "data: 3\n\n", "data: 4\n\n"}
	reply := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, ev := range events {
		reply += fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev)
	}
	reply += "0\r\n\r\n"
	base := rawServer(t, reply)
	c := newClient(t, h1.Options{})
	resp, err := c.Do(t.Context(), &h1.Request{Method: "GET", URL: mustURL(t, base+"/")})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := make([]byte, 4096)
	n, err := resp.Body.Read(p)
	if want := strings.Join(events, ""); string(p[:n]) != want {
		t.Errorf("first Read = %q (err %v), want the whole burst %q", p[:n], err, want)
	}
}

// A malformed header line is refused without quoting it: upstream answers
// may echo the credentials they were sent, and errors reach the logs.
func TestProtocolErrorsDoNotQuoteFieldLines(t *testing.T) {
	const secret = "sk-upstream-secret-value"
	for _, head := range []string{
		"HTTP/1.1 200 OK\r\nX-Echo: a\r\n Authorization: Bearer " + secret + "\r\n\r\n",
		"HTTP/1.1 200 OK\r\nAuthorization: Bearer " + secret + "\x01\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: Bearer " + secret + "\r\n\r\n",
		"HTTP/1.1 200 OK\r\nAuthorization: Bearer " + secret + "\n\r\n",
	} {
		c := newClient(t, h1.Options{})
		_, err := c.Do(t.Context(), &h1.Request{Method: "GET", URL: mustURL(t, rawServer(t, head)+"/")})
		if !errors.Is(err, h1.ErrProtocol) || strings.Contains(err.Error(), secret) {
			t.Errorf("head %q: error %v, want ErrProtocol without the header's value", head, err)
		}
	}
}
