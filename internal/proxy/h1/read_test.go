package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/proxy/h1"
)

// memConn is an upstream connection that has sent its bytes and closed:
// reads return them and then io.EOF; writes are discarded.
type memConn struct {
	r      bytes.Reader
	closed atomic.Bool
}

func (m *memConn) Read(p []byte) (int, error)       { return m.r.Read(p) }
func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { m.closed.Store(true); return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// exchange is how a reader read one response.
type exchange struct {
	status  int
	framing string // "none" (HEAD, 1xx, 204, 304), "length", "chunked" or "close"
	length  int64  // the Content-Length when framing is "length"
	body    []byte
	err     error // from reading the head or the body
	pooled  bool  // h1: the connection went back to the idle pool
	closed  bool  // h1: the connection was closed; net/http: it would be
}

// short quotes the start of raw for a failure message.
func short(raw []byte) string {
	const max = 160
	if len(raw) > max {
		return strconv.Quote(string(raw[:max])) + "…"
	}
	return strconv.Quote(string(raw))
}

func bodiless(method string, status int) bool {
	return method == http.MethodHead || status/100 == 1 || status == http.StatusNoContent || status == http.StatusNotModified
}

// readH1 sends a method request with h1 to an upstream that answers raw
// and closes, and reads the whole body.
func readH1(raw []byte, method string) exchange {
	c := h1.New(h1.Options{})
	defer c.Close()
	mc := &memConn{}
	mc.r.Reset(raw)
	h1.SetDial(c, func(context.Context, string, string) (net.Conn, error) { return mc, nil })
	var x exchange
	resp, err := c.Do(context.Background(), &h1.Request{Method: method, URL: &url.URL{Scheme: "http", Host: "upstream"}})
	if err == nil {
		x.status, x.framing, x.length = resp.StatusCode, h1.Framing(resp), resp.ContentLength
		if bodiless(method, x.status) {
			x.framing = "none"
		}
		x.body, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	x.err, x.pooled, x.closed = err, h1.IdleConns(c) == 1, mc.closed.Load()
	return x
}

// readNetHTTP reads raw as the response to a method request with
// net/http's ReadResponse, and its whole body.
func readNetHTTP(raw []byte, method string) exchange {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		return exchange{err: err}
	}
	x := exchange{status: resp.StatusCode, length: resp.ContentLength, closed: resp.Close}
	switch {
	case bodiless(method, x.status):
		x.framing = "none"
	case len(resp.TransferEncoding) > 0:
		x.framing = "chunked"
	case resp.ContentLength >= 0:
		x.framing = "length"
	default:
		x.framing = "close"
	}
	x.body, x.err = io.ReadAll(resp.Body)
	return x
}

// checkRead fails t unless h1 read raw in a way net/http agrees with: h1
// may refuse anything, but what it accepts net/http must accept too, with
// the same status, framing and body bytes; h1 pools no connection net/http
// would close; and h1 either pools a connection or closes it.
func checkRead(t *testing.T, raw []byte, method string) exchange {
	t.Helper()
	got := readH1(raw, method)
	if got.pooled == got.closed {
		t.Fatalf("%s %s: pooled %v, closed %v; want exactly one", method, short(raw), got.pooled, got.closed)
	}
	if got.err != nil {
		if got.pooled {
			t.Fatalf("%s %s: refused (%v) but pooled", method, short(raw), got.err)
		}
		return got
	}
	want := readNetHTTP(raw, method)
	switch {
	case want.err != nil:
		t.Fatalf("%s %s: h1 accepted what net/http refuses: %v", method, short(raw), want.err)
	case got.status != want.status:
		t.Fatalf("%s %s: status %d, net/http %d", method, short(raw), got.status, want.status)
	case got.framing != want.framing:
		t.Fatalf("%s %s: framing %s, net/http %s", method, short(raw), got.framing, want.framing)
	case got.framing == "length" && got.length != want.length:
		t.Fatalf("%s %s: length %d, net/http %d", method, short(raw), got.length, want.length)
	case !bytes.Equal(got.body, want.body):
		t.Fatalf("%s %s: body %q, net/http %q", method, short(raw), got.body, want.body)
	case got.pooled && want.closed:
		t.Fatalf("%s %s: pooled a connection net/http would close", method, raw)
	}
	return got
}

const chunkedHead = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

// refused are responses h1 must refuse, with the error it must report:
// ErrProtocol for what is not well framed or was never asked for,
// io.ErrUnexpectedEOF for what is cut short.
var refused = []struct {
	name, method, raw string
	want              error
}{
	{"length with a plus sign", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", h1.ErrProtocol},
	{"negative length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", h1.ErrProtocol},
	{"hex length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", h1.ErrProtocol},
	{"length with inner space", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\nhello", h1.ErrProtocol},
	{"empty length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello", h1.ErrProtocol},
	{"length list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", h1.ErrProtocol},
	{"repeated equal lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"conflicting lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", h1.ErrProtocol},
	{"overflowing length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello", h1.ErrProtocol},
	{"length past int64", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nhello", h1.ErrProtocol},
	{"length with a no-break space", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\u00a0\r\n\r\nhello", h1.ErrProtocol},
	{"bad length on HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", h1.ErrProtocol},
	{"bad length on 204", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n", h1.ErrProtocol},

	{"gzip, chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"identity", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello", h1.ErrProtocol},
	{"chunked, chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"two Transfer-Encoding lines", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunked in HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"gzip on HEAD", "HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", h1.ErrProtocol},

	{"100 Continue", "GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"101 Switching Protocols", "GET", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello", h1.ErrProtocol},
	{"103 Early Hints", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"199", "GET", "HTTP/1.1 199 Whatever\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},

	{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"folded length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\t0\r\n\r\nhello", h1.ErrProtocol},
	{"first header line indented", "GET", "HTTP/1.1 200 OK\r\n Content-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"space in a name", "GET", "HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"space before the colon", "GET", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", h1.ErrProtocol},
	{"no colon", "GET", "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", h1.ErrProtocol},
	{"NUL in a value", "GET", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"CR in a value", "GET", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"DEL in a value", "GET", "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"bare LF lines", "GET", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", h1.ErrProtocol},
	{"bare LF ends the head", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\nhello", h1.ErrProtocol},
	{"CR in the reason", "GET", "HTTP/1.1 200 O\rK\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"not http", "GET", "SSH-2.0-OpenSSH\r\n", h1.ErrProtocol},
	{"status with a sign", "GET", "HTTP/1.1 +20 OK\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},
	{"two spaces before the status", "GET", "HTTP/1.1  200 OK\r\nContent-Length: 5\r\n\r\nhello", h1.ErrProtocol},

	{"chunk size with a plus sign", "GET", chunkedHead + "+5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunk size with 0x", "GET", chunkedHead + "0x5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunk size with a trailing space", "GET", chunkedHead + "5 \r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunk size with a leading space", "GET", chunkedHead + " 5\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"empty chunk size", "GET", chunkedHead + "\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunk size of 17 digits", "GET", chunkedHead + "00000000000000005\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunk size past int64", "GET", chunkedHead + "8000000000000000\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"bare LF after a chunk size", "GET", chunkedHead + "5\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"junk after chunk data", "GET", chunkedHead + "5\r\nhelloXX\r\n0\r\n\r\n", h1.ErrProtocol},
	{"bare LF after chunk data", "GET", chunkedHead + "5\r\nhello\n0\r\n\r\n", h1.ErrProtocol},
	{"space before a chunk extension", "GET", chunkedHead + "5 ;a\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"CR in a chunk extension", "GET", chunkedHead + "5;a\rb\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"chunk line too long", "GET", chunkedHead + "5;" + strings.Repeat("a", 5000) + "\r\nhello\r\n0\r\n\r\n", h1.ErrProtocol},
	{"too much chunk overhead", "GET", chunkedHead + strings.Repeat("1;"+strings.Repeat("a", 100)+"\r\nx\r\n", 200) + "0\r\n\r\n", h1.ErrProtocol},
	{"malformed trailer", "GET", chunkedHead + "5\r\nhello\r\n0\r\nno colon\r\n\r\n", h1.ErrProtocol},
	{"folded trailer", "GET", chunkedHead + "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", h1.ErrProtocol},
	{"NUL in a trailer", "GET", chunkedHead + "5\r\nhello\r\n0\r\nX-T: a\x00\r\n\r\n", h1.ErrProtocol},
	{"long trailer", "GET", chunkedHead + "5\r\nhello\r\n0\r\nX-T: " + strings.Repeat("a", 5000) + "\r\n\r\n", h1.ErrProtocol},

	{"missing last chunk", "GET", chunkedHead + "5\r\nhello\r\n", io.ErrUnexpectedEOF},
	{"missing end of trailer", "GET", chunkedHead + "5\r\nhello\r\n0\r\n", io.ErrUnexpectedEOF},
	{"short body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", io.ErrUnexpectedEOF},
	{"cut in the head", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/pl", io.ErrUnexpectedEOF},
}

// accepted are well-framed responses h1 must read, with the body it must
// read and whether the connection may be used again.
var accepted = []struct {
	name, method, raw, body string
	pooled                  bool
}{
	{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", true},
	{"length with spaces around it", "GET", "HTTP/1.1 200 OK\r\nContent-Length: \t 5 \t\r\n\r\nhello", "hello", true},
	{"length with leading zeros", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0005\r\n\r\nhello", "hello", true},
	{"zero length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "", true},
	{"no reason", "GET", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "ok", true},
	{"obs-text in a value", "GET", "HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok", "ok", true},
	{"chunked", "GET", chunkedHead + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", true},
	{"chunk extensions and trailers", "GET", chunkedHead + "5;a=b\r\nhello\r\n5;c\r\n worl\r\n1\r\nd\r\n0;x\r\nX-T: v\r\nX-U:w\r\n\r\n", "hello world", true},
	{"upper case", "GET", "HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\nA\r\n0123456789\r\n00\r\n\r\n", "0123456789", true},
	{"chunked and length", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello", false},
	{"until close", "GET", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", "all of it", false},
	{"HTTP/1.1 until close", "GET", "HTTP/1.1 200 OK\r\n\r\nall of it", "all of it", false},
	{"HTTP/1.0 keep-alive", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", "hello", true},
	{"HTTP/1.0 keep-alive, close", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 5\r\n\r\nhello", "hello", false},
	{"Connection: close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", "hello", false},
	{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", "", true},
	{"304 with a length", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "", true},
	{"HEAD with a length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "", true},
	{"HEAD chunked", "HEAD", chunkedHead, "", true},
}

func TestRefusedResponses(t *testing.T) {
	t.Parallel()
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := checkRead(t, []byte(tc.raw), tc.method)
			if !errors.Is(got.err, tc.want) {
				t.Fatalf("error %v, want %v", got.err, tc.want)
			}
		})
	}
}

func TestAcceptedResponses(t *testing.T) {
	t.Parallel()
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := checkRead(t, []byte(tc.raw), tc.method)
			if got.err != nil || string(got.body) != tc.body || got.pooled != tc.pooled {
				t.Fatalf("body %q, pooled %v, error %v; want %q, pooled %v", got.body, got.pooled, got.err, tc.body, tc.pooled)
			}
		})
	}
}

// FuzzReadResponse reads the same bytes with h1 and with net/http's
// ReadResponse (see checkRead). Its seeds are the responses above, but for
// the few larger than the read buffer: the fuzzer minimises every new
// input it finds, and on inputs grown from those it spent minutes doing so,
// its workers making no progress. The tests above check them anyway.
func FuzzReadResponse(f *testing.F) {
	const maxSeed = 4 << 10
	for _, tc := range refused {
		if len(tc.raw) <= maxSeed {
			f.Add([]byte(tc.raw), tc.method == http.MethodHead)
		}
	}
	for _, tc := range accepted {
		f.Add([]byte(tc.raw), tc.method == http.MethodHead)
	}
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		checkRead(t, raw, method)
	})
}
