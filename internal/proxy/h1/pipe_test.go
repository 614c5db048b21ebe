package h1_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/llmproxy/llm-proxy/internal/proxy/h1"
)

// pipeUpstream makes c dial in-memory connections and hands their upstream
// ends to the test, in dialling order. Inside a synctest bubble their
// deadlines run on the bubble's clock.
func pipeUpstream(c *h1.Client) <-chan net.Conn {
	ups := make(chan net.Conn, 4)
	h1.SetDial(c, func(context.Context, string, string) (net.Conn, error) {
		cli, up := net.Pipe()
		ups <- up
		return cli, nil
	})
	return ups
}

// readHead reads one request head from br.
func readHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "\r\n" {
			return nil
		}
	}
}

var pipeURL = "http://upstream/v1/x"

func TestBodyIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const idle = 10 * time.Second
		c := h1.New(h1.Options{BodyIdleTimeout: idle})
		defer c.Close()
		ups := pipeUpstream(c)
		hungUp := make(chan struct{})
		go func() {
			defer close(hungUp)
			up := <-ups
			defer up.Close()
			if readHead(bufio.NewReader(up)) != nil {
				return
			}
			if _, err := io.WriteString(up, chunkedHead+"5\r\nfirst\r\n"); err != nil {
				return
			}
			// Silence, until the client hangs up.
			_, _ = io.Copy(io.Discard, up)
		}()
		resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, pipeURL)})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 64)
		if n, err := resp.Body.Read(buf); string(buf[:n]) != "first" || err != nil {
			t.Fatalf("first read %q, %v", buf[:n], err)
		}
		start := time.Now()
		_, err = resp.Body.Read(buf)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("error %v, want a net.Error timeout", err)
		}
		if d := time.Since(start); d != idle {
			t.Fatalf("the read failed after %v of silence, want %v", d, idle)
		}
		synctest.Wait()
		select {
		case <-hungUp:
		default:
			t.Fatal("the connection is still open")
		}
		if n := h1.IdleConns(c); n != 0 {
			t.Fatalf("%d idle connections, want 0", n)
		}
	})
}

// BodyIdleTimeout bounds the silences in a body, not the whole body, and
// not the wait for a head, on a new or on a reused connection.
func TestBodyIdleTimeoutBoundsSilencesOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const idle = 10 * time.Second
		c := h1.New(h1.Options{BodyIdleTimeout: idle})
		defer c.Close()
		ups := pipeUpstream(c)
		go func() {
			up := <-ups
			defer up.Close()
			br := bufio.NewReader(up)
			for {
				if readHead(br) != nil {
					return
				}
				time.Sleep(2 * idle)
				parts := []string{chunkedHead}
				for range 4 {
					parts = append(parts, "5\r\ntick\n\r\n")
				}
				parts = append(parts, "0\r\n\r\n")
				for i, part := range parts {
					if i > 0 {
						time.Sleep(idle * 3 / 4)
					}
					if _, err := io.WriteString(up, part); err != nil {
						return
					}
				}
			}
		}()
		for i := range 2 {
			start := time.Now()
			resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, pipeURL)})
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil || string(b) != strings.Repeat("tick\n", 4) {
				t.Fatalf("request %d: body %q, %v", i, b, err)
			}
			if d, want := time.Since(start), 2*idle+5*idle*3/4; d != want {
				t.Fatalf("request %d took %v, want %v", i, d, want)
			}
			if n := h1.IdleConns(c); n != 1 {
				t.Fatalf("request %d: %d idle connections, want 1", i, n)
			}
		}
	})
}

// Cancelling the context still cuts a body read that BodyIdleTimeout
// would let wait much longer.
func TestCancelWithBodyIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := h1.New(h1.Options{BodyIdleTimeout: time.Hour})
		defer c.Close()
		ups := pipeUpstream(c)
		go func() {
			up := <-ups
			defer up.Close()
			if readHead(bufio.NewReader(up)) != nil {
				return
			}
			if _, err := io.WriteString(up, chunkedHead+"5\r\nfirst\r\n"); err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, up)
		}()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := c.Do(ctx, &h1.Request{Method: http.MethodGet, URL: mustURL(t, pipeURL)})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		time.AfterFunc(time.Second, cancel)
		start := time.Now()
		b, err := io.ReadAll(resp.Body)
		if err == nil || string(b) != "first" {
			t.Fatalf("body %q, %v; want first and an error", b, err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("the read ended %v in, want at the cancel after 1s", d)
		}
	})
}

// Over TCP the idle timeout is a *net.OpError timeout underneath.
func TestBodyIdleTimeoutOverTCP(t *testing.T) {
	t.Parallel()
	s := stallingServer(t, "data: first\n\n")
	c := newClient(t, h1.Options{BodyIdleTimeout: 50 * time.Millisecond})
	resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, s.URL)})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	var op *net.OpError
	if !errors.As(err, &op) || !op.Timeout() || !strings.HasPrefix(string(b), "data: first") {
		t.Fatalf("read %q, %v; want the first event and a *net.OpError timeout", b, err)
	}
}

// Chunk data already read is returned at once, not held back while the
// next chunk or the rest of the trailer is on its way.
func TestChunkDataIsNotHeldBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pause = time.Second
		c := h1.New(h1.Options{})
		defer c.Close()
		ups := pipeUpstream(c)
		go func() {
			up := <-ups
			defer up.Close()
			if readHead(bufio.NewReader(up)) != nil {
				return
			}
			for i, part := range []string{chunkedHead + "5\r\nfirst\r\n", "6\r\nsecond\r\n0\r\nX-T: a\r\n", "\r\n"} {
				if i > 0 {
					time.Sleep(pause)
				}
				if _, err := io.WriteString(up, part); err != nil {
					return
				}
			}
			_, _ = io.Copy(io.Discard, up)
		}()
		start := time.Now()
		resp, err := c.Do(context.Background(), &h1.Request{Method: http.MethodGet, URL: mustURL(t, pipeURL)})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 64)
		for i, want := range []struct {
			data string
			at   time.Duration
			err  error
		}{{"first", 0, nil}, {"second", pause, nil}, {"", 2 * pause, io.EOF}} {
			n, err := resp.Body.Read(buf)
			if string(buf[:n]) != want.data || err != want.err || time.Since(start) != want.at {
				t.Fatalf("read %d: %q, %v at %v; want %q, %v at %v", i, buf[:n], err, time.Since(start), want.data, want.err, want.at)
			}
		}
	})
}
