package faultproxy_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/testbed/faultproxy"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line over c and reports whether it came back.
func roundTrip(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "ping\n"
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCutAndRestore(t *testing.T) {
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	live := dial(t, p.Addr())
	if !roundTrip(live) {
		t.Fatal("no echo through the forwarder")
	}
	p.Cut()
	if roundTrip(live) {
		t.Error("a connection open before Cut still works")
	}
	if roundTrip(dial(t, p.Addr())) {
		t.Error("a connection made during Cut works")
	}
	p.Restore()
	if !roundTrip(dial(t, p.Addr())) {
		t.Error("a connection made after Restore does not work")
	}
}

func TestCloseEndsConnections(t *testing.T) {
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	if !roundTrip(c) {
		t.Fatal("no echo through the forwarder")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if roundTrip(c) {
		t.Error("connection works after Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("forwarder still accepts after Close")
	}
}
