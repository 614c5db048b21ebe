package h1_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/proxy/h1"
)

// benchServer answers every request head on every connection with reply:
// a keep-alive upstream that does no work of its own and allocates
// nothing per request, so -benchmem counts the client's allocations.
func benchServer(b *testing.B, reply string) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	out := []byte(reply)
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) == 2 {
						if _, err := nc.Write(out); err != nil {
							return
						}
					}
				}
			})
		}
	})
	b.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, nc := range conns {
			_ = nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// BenchmarkDo measures one GET and the read of its whole body over a
// pooled connection: a JSON body with a Content-Length, and an event
// stream of 40 chunks; each without and with a BodyIdleTimeout (a read
// deadline set before every read from the connection).
func BenchmarkDo(b *testing.B) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Request-Id: req_123\r\n"
	event := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok"}}]}` + "\n\n"
	var stream strings.Builder
	stream.WriteString(strings.Replace(head, "%s", "text/event-stream", 1) + "Transfer-Encoding: chunked\r\n\r\n")
	for range 40 {
		stream.WriteString(strconv.FormatInt(int64(len(event)), 16) + "\r\n" + event + "\r\n")
	}
	stream.WriteString("0\r\n\r\n")
	json := `{"id":"c","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"` + strings.Repeat("tok ", 200) + `"}}]}`
	replies := []struct{ name, reply string }{
		{"length", strings.Replace(head, "%s", "application/json", 1) + "Content-Length: " + strconv.Itoa(len(json)) + "\r\n\r\n" + json},
		{"chunked", stream.String()},
	}
	for _, r := range replies {
		b.Run(r.name, func(b *testing.B) {
			benchDo(b, h1.Options{}, r.reply)
		})
		b.Run(r.name+"_idle", func(b *testing.B) {
			benchDo(b, h1.Options{BodyIdleTimeout: 30 * time.Second}, r.reply)
		})
	}
}

func benchDo(b *testing.B, opts h1.Options, reply string) {
	c := h1.New(opts)
	b.Cleanup(c.Close)
	req := &h1.Request{Method: http.MethodGet, URL: mustURL(b, benchServer(b, reply)+"/v1/x"), Header: http.Header{"Authorization": {"Bearer k"}}}
	buf := make([]byte, 32<<10)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		for err == nil {
			_, err = resp.Body.Read(buf)
		}
		if err != io.EOF {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
	}
}
