package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// conn is one upstream connection. It belongs to one exchange at a time:
// the caller of roundTrip until the response body is done, or the pool.
type conn struct {
	client    *Client
	key       string
	nc        net.Conn // what is read and written (TLS or TCP)
	raw       net.Conn // the TCP connection under nc, for the liveness check
	br        *bufio.Reader
	header    http.Header // the last response's headers, cleared for the next
	reused    bool
	idleSince time.Time
}

func newConn(c *Client, key string, nc, raw net.Conn) *conn {
	return &conn{client: c, key: key, nc: nc, raw: raw, br: bufio.NewReaderSize(nc, readBufferSize)}
}

// writeError marks a failed request write: the upstream read nothing it
// could act on, so the request may be sent again.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write request: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// aLongTimeAgo is a deadline in the past: it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes the request and reads the response head. On error the
// caller closes the connection.
func (cn *conn) roundTrip(ctx context.Context, method string, head, body []byte) (*Response, error) {
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(aLongTimeAgo) })
	}
	resp, err := cn.exchange(ctx, method, head, body)
	if err != nil {
		stop()
		if ctx.Err() != nil {
			// The interrupted read or write reports a timeout; say why.
			return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return nil, err
	}
	resp.body.stop = stop
	return resp, nil
}

func (cn *conn) exchange(ctx context.Context, method string, head, body []byte) (*Response, error) {
	// One writev for head and body.
	bufs := net.Buffers{head}
	if len(body) > 0 {
		bufs = append(bufs, body)
	}
	if _, err := bufs.WriteTo(cn.nc); err != nil {
		return nil, &writeError{err}
	}
	timeout := cn.client.opts.ResponseHeaderTimeout
	if timeout > 0 {
		if err := cn.nc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, err
		}
	}
	resp, err := cn.readResponse(method)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		if err := cn.nc.SetReadDeadline(time.Time{}); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			// Cancelled while the deadline was being cleared: the
			// cancellation's deadline may have been overwritten.
			return nil, ctx.Err()
		}
	}
	return resp, nil
}

// appendHead appends the request line and headers of req to b.
func appendHead(b []byte, req *Request) ([]byte, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	uri := req.URL.RequestURI()
	if !validToken(method) || !validHeader(uri) || !validHeader(req.URL.Host) {
		return nil, errors.New("h1: invalid request line")
	}
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, req.URL.Host...)
	b = append(b, "\r\n"...)
	for k, vv := range req.Header {
		if ownHeader(k) {
			continue
		}
		if !validToken(k) {
			return nil, fmt.Errorf("h1: invalid header name %q", k)
		}
		for _, v := range vv {
			if !validHeader(v) {
				return nil, fmt.Errorf("h1: invalid value for header %s", k)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if len(req.Body) > 0 || bodyExpected(method) {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(req.Body)), 10)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...), nil
}

// ownHeader reports the headers the Client writes itself or never sends.
func ownHeader(k string) bool {
	switch k {
	case "Host", "Content-Length", "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection":
		return true
	}
	return false
}

func bodyExpected(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Response is an upstream response. Header holds every header received,
// hop-by-hop ones included; the map is the connection's and is reused once
// the body is closed or read to its end (its value slices are not). Body
// must be closed.
type Response struct {
	StatusCode int
	Header     http.Header
	// ContentLength is the body length, -1 when unknown (chunked or until
	// the connection closes).
	ContentLength int64
	Body          io.ReadCloser
	body          *body
}

// readResponse reads a response head (skipping 1xx responses) and sets up
// its body.
func (cn *conn) readResponse(method string) (*Response, error) {
	budget := maxHeaderBytes
	for {
		line, err := cn.readLine(&budget)
		if err != nil {
			return nil, err
		}
		proto, status, ok := parseStatusLine(line)
		if !ok {
			return nil, fmt.Errorf("h1: malformed status line %q", truncate(line))
		}
		h, err := cn.readHeader(&budget)
		if err != nil {
			return nil, err
		}
		if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
			continue
		}
		return cn.newResponse(method, proto, status, h)
	}
}

func (cn *conn) newResponse(method string, proto, status int, h http.Header) (*Response, error) {
	resp := &Response{StatusCode: status, Header: h, ContentLength: -1}
	b := &body{cn: cn, keepAlive: keepAlive(proto, h)}
	resp.body, resp.Body = b, b
	te := h["Transfer-Encoding"]
	switch {
	case method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified || status == http.StatusSwitchingProtocols:
		b.remaining = 0
		if status == http.StatusSwitchingProtocols {
			b.keepAlive = false
		}
	case len(te) > 0:
		if len(te) != 1 || !strings.EqualFold(textproto.TrimString(te[0]), "chunked") {
			return nil, fmt.Errorf("h1: unsupported Transfer-Encoding %q", te)
		}
		delete(h, "Content-Length") // chunked wins (RFC 9112 §6.3)
		b.chunked = httputil.NewChunkedReader(cn.br)
		b.remaining = -1
	case len(h["Content-Length"]) > 0:
		n, err := contentLength(h["Content-Length"])
		if err != nil {
			return nil, err
		}
		b.remaining, resp.ContentLength = n, n
	default:
		b.remaining, b.keepAlive = -1, false // until the upstream closes
	}
	return resp, nil
}

func contentLength(vv []string) (int64, error) {
	first := textproto.TrimString(vv[0])
	for _, v := range vv[1:] {
		if textproto.TrimString(v) != first {
			return 0, errors.New("h1: conflicting Content-Length")
		}
	}
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("h1: bad Content-Length %q", first)
	}
	return n, nil
}

func keepAlive(proto int, h http.Header) bool {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			switch t := strings.TrimSpace(tok); {
			case strings.EqualFold(t, "close"):
				return false
			case strings.EqualFold(t, "keep-alive") && proto == 10:
				return true
			}
		}
	}
	return proto == 11
}

// parseStatusLine parses "HTTP/1.x NNN reason"; proto is 10 or 11.
func parseStatusLine(line []byte) (proto, status int, ok bool) {
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
		proto = 11
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		proto = 10
	default:
		return 0, 0, false
	}
	rest := line[len("HTTP/1.1 "):]
	if len(rest) < 3 || (len(rest) > 3 && rest[3] != ' ') {
		return 0, 0, false
	}
	for _, c := range rest[:3] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		status = status*10 + int(c-'0')
	}
	return proto, status, status >= 100
}

// readHeader reads header lines up to the empty line into the
// connection's header map, emptied first.
func (cn *conn) readHeader(budget *int) (http.Header, error) {
	h := cn.header
	if h == nil {
		h = make(http.Header, 8)
		cn.header = h
	}
	clear(h)
	var last string
	for {
		line, err := cn.readLine(budget)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: a continuation of the previous value (RFC 9112 §5.2).
			vv := h[last]
			if len(vv) == 0 {
				return nil, errors.New("h1: malformed header continuation")
			}
			vv[len(vv)-1] += " " + string(bytes.TrimSpace(line))
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validToken(string(line[:colon])) {
			return nil, fmt.Errorf("h1: malformed header line %q", truncate(line))
		}
		last = canonicalKey(line[:colon])
		h[last] = append(h[last], string(bytes.TrimSpace(line[colon+1:])))
	}
}

// readLine returns the next line without its CRLF (or LF), charging its
// length to budget.
func (cn *conn) readLine(budget *int) ([]byte, error) {
	line, err := cn.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(long) <= *budget {
			line, err = cn.br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	*budget -= len(line)
	if *budget < 0 {
		return nil, errors.New("h1: response header too large")
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// body reads a response body and hands the connection back to the pool
// once it is read to its end, or closes it.
type body struct {
	cn        *conn // nil once released
	remaining int64 // bytes left of a Content-Length body; -1 otherwise
	chunked   io.Reader
	keepAlive bool
	stop      func() bool // detaches the context; false if it fired
	err       error       // sticky read error (io.EOF at the end)
}

// Read implements io.Reader.
func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remaining == 0 {
		b.finish(true)
		return 0, io.EOF
	}
	var n int
	var err error
	switch {
	case b.chunked != nil:
		n, err = b.chunked.Read(p)
		if errors.Is(err, io.EOF) {
			err = b.cn.skipTrailer()
		}
	case b.remaining > 0:
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.cn.br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 && err == nil {
			err = io.EOF
		} else if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	default:
		n, err = b.cn.br.Read(p)
	}
	if err != nil {
		b.err = err
		b.finish(errors.Is(err, io.EOF))
	}
	return n, err
}

// skipTrailer consumes the trailer section after the last chunk; io.EOF
// means the body ended cleanly.
func (cn *conn) skipTrailer() error {
	budget := maxHeaderBytes
	for {
		line, err := cn.readLine(&budget)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return io.EOF
		}
	}
}

// finish releases the connection: back to the pool after a complete
// body on a keep-alive connection whose context did not fire, else closed.
func (b *body) finish(complete bool) {
	cn := b.cn
	if cn == nil {
		return
	}
	b.cn = nil
	detached := b.stop()
	if complete && b.keepAlive && detached {
		cn.client.put(cn)
		return
	}
	_ = cn.nc.Close()
}

// Close implements io.Closer. Closing before the end closes the
// connection.
func (b *body) Close() error {
	if b.err == nil {
		b.err = errors.New("h1: read on closed body")
	}
	b.finish(b.remaining == 0)
	return nil
}
