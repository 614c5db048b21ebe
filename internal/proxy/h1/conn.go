package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// conn is one upstream connection. It belongs to one exchange at a time:
// the caller of roundTrip until the response body is done, or the pool.
type conn struct {
	client    *Client
	key       string
	nc        net.Conn // what is read and written (TLS or TCP)
	raw       net.Conn // the TCP connection under nc, for the liveness check
	sock      socket   // what br reads from: nc, with the body idle deadline
	br        *bufio.Reader
	header    http.Header // the last response's headers, cleared for the next
	reused    bool
	idleSince time.Time
}

func newConn(c *Client, key string, nc, raw net.Conn) *conn {
	cn := &conn{client: c, key: key, nc: nc, raw: raw, sock: socket{nc: nc}}
	cn.br = bufio.NewReaderSize(&cn.sock, readBufferSize)
	return cn
}

// socket reads from a connection, moving its read deadline forward while a
// response body is read under BodyIdleTimeout. The deadline is looked at
// only when the buffered reader above it has run dry and reads from the
// connection, and moved only when it has fallen more than idleSlack behind
// now + idle: moving a deadline re-arms a runtime timer, which on a stream
// of small events cost more than relaying them. Silence is therefore cut
// after between idle − idleSlack(idle) and idle.
type socket struct {
	nc net.Conn
	// idle is BodyIdleTimeout while a body is read, zero otherwise; at is
	// the idle deadline last set (zero: none). Only the exchange's
	// goroutine touches them.
	idle time.Duration
	at   time.Time
	// cancelled is set by the exchange's context before it moves the
	// deadline into the past, so a deadline set here cannot undo that.
	cancelled atomic.Bool
}

// Read implements io.Reader. A read cut by the idle deadline fails with an
// error that is a net.Error timeout.
func (s *socket) Read(p []byte) (int, error) {
	if s.idle <= 0 {
		return s.nc.Read(p)
	}
	if want := time.Now().Add(s.idle); want.Sub(s.at) > idleSlack(s.idle) {
		if err := s.nc.SetReadDeadline(want); err != nil {
			return 0, err
		}
		s.at = want
		if s.cancelled.Load() {
			// The context fired and may have set its deadline before ours.
			_ = s.nc.SetReadDeadline(aLongTimeAgo)
		}
	}
	n, err := s.nc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !s.cancelled.Load() {
		err = fmt.Errorf("h1: upstream sent no body bytes for %v: %w", s.idle, err)
	}
	return n, err
}

// idleSlack is how far the idle deadline may lag behind now + idle before
// it is moved: an eighth of idle, at most a second.
func idleSlack(idle time.Duration) time.Duration {
	return min(idle/8, time.Second)
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
		stop = context.AfterFunc(ctx, func() {
			cn.sock.cancelled.Store(true)
			_ = cn.nc.SetDeadline(aLongTimeAgo)
		})
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
	cn.sock.idle = cn.client.opts.BodyIdleTimeout
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
		if ctx.Err() != nil {
			// Cancelled while the deadline was being set: the
			// cancellation's deadline may have been overwritten.
			return nil, ctx.Err()
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

// validToken reports whether s is a token (RFC 9110 §5.6.2): what a
// method or a field name must be.
func validToken[S string | []byte](s S) bool {
	if len(s) == 0 {
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

// fieldValueByte reports whether c may appear in a field value or a reason
// phrase: HTAB, SP, VCHAR or obs-text (RFC 9110 §5.5). CR, LF, NUL and the
// other controls may not.
func fieldValueByte(c byte) bool {
	return c == '\t' || (c >= ' ' && c != 0x7f)
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

// readResponse reads a response head and sets up its body. It accepts
// only well-framed HTTP/1.1 or 1.0, and no 1xx: the Client asks for none,
// and a 101 would hand the connection over to another protocol.
func (cn *conn) readResponse(method string) (*Response, error) {
	budget := maxHeaderBytes
	line, err := cn.readLine(&budget)
	if err != nil {
		return nil, err
	}
	proto, status, ok := parseStatusLine(line)
	if !ok {
		return nil, protocolError("malformed status line %q", truncate(line))
	}
	if status < 200 {
		return nil, protocolError("unsolicited %d response", status)
	}
	h, err := cn.readHeader(&budget)
	if err != nil {
		return nil, err
	}
	return cn.newResponse(method, proto, status, h)
}

// newResponse sets up the body of a response by its framing (RFC 9112
// §6.3). Content-Length and Transfer-Encoding are checked even when the
// response has no body, as net/http does.
func (cn *conn) newResponse(method string, proto, status int, h http.Header) (*Response, error) {
	te, cl := h["Transfer-Encoding"], h["Content-Length"]
	if len(te) > 0 {
		// An HTTP/1.0 message with Transfer-Encoding has likely passed
		// something that did not decode it (RFC 9112 §6.1), and net/http
		// ignores the header there: refuse rather than pick a framing.
		if proto == 10 {
			return nil, protocolError("Transfer-Encoding in an HTTP/1.0 response")
		}
		// Only "chunked", once: what net/http accepts too.
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return nil, protocolError("unsupported Transfer-Encoding %q", te)
		}
	}
	length := int64(-1)
	if len(cl) > 0 {
		if len(cl) > 1 {
			return nil, protocolError("%d Content-Length fields", len(cl))
		}
		n, ok := parseContentLength(cl[0])
		if !ok {
			return nil, protocolError("bad Content-Length %q", cl[0])
		}
		length = n
	}
	resp := &Response{StatusCode: status, Header: h, ContentLength: -1}
	b := &body{cn: cn, keepAlive: keepAlive(proto, h)}
	resp.body, resp.Body = b, b
	if len(te) > 0 && len(cl) > 0 {
		// Transfer-Encoding wins, but the upstream and whatever is in
		// between may disagree on where this response ends: the bytes
		// after it are not trusted to start the next one.
		delete(h, "Content-Length")
		b.keepAlive = false
	}
	switch {
	case method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified:
		b.remaining = 0
	case len(te) > 0:
		b.chunked = true
	case length >= 0:
		b.remaining, resp.ContentLength = length, length
	default:
		b.remaining, b.keepAlive = -1, false // until the upstream closes
	}
	return resp, nil
}

// parseContentLength parses a Content-Length value: decimal digits only,
// within int64.
func parseContentLength(v string) (int64, bool) {
	if v == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' || n > (math.MaxInt64-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// keepAlive reports whether the upstream keeps the connection open after
// this response: HTTP/1.1 unless it says close, HTTP/1.0 only if it says
// keep-alive and not close.
func keepAlive(proto int, h http.Header) bool {
	keep := proto == 11
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			switch t := textproto.TrimString(tok); {
			case strings.EqualFold(t, "close"):
				return false
			case strings.EqualFold(t, "keep-alive"):
				keep = true
			}
		}
	}
	return keep
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
	for _, c := range rest[3:] {
		if !fieldValueByte(c) {
			return 0, 0, false
		}
	}
	return proto, status, status >= 100
}

// readHeader reads field lines up to the empty line into the connection's
// header map, emptied first.
func (cn *conn) readHeader(budget *int) (http.Header, error) {
	h := cn.header
	if h == nil {
		h = make(http.Header, 8)
		cn.header = h
	}
	clear(h)
	for {
		line, err := cn.readLine(budget)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			return h, nil
		}
		name, value, err := splitField(line)
		if err != nil {
			return nil, err
		}
		k := canonicalKey(name)
		h[k] = append(h[k], string(value))
	}
}

// splitField splits a field line into its name and its value without the
// whitespace around it. It refuses obs-fold continuation lines (RFC 9112
// §5.2 lets a client replace them with spaces; refusing is simpler and
// leaves no doubt about what the upstream meant), names that are not
// tokens (whitespace before the colon among them) and values with control
// characters.
// Errors never quote a field line: upstream answers echo credentials.
func splitField(line []byte) (name, value []byte, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, protocolError("folded field line")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !validToken(line[:colon]) {
		return nil, nil, protocolError("malformed field name")
	}
	value = line[colon+1:]
	for _, c := range value {
		if !fieldValueByte(c) {
			// The name only: the value may be a credential.
			return nil, nil, protocolError("control character in field %q", truncate(line[:colon]))
		}
	}
	return line[:colon], bytes.Trim(value, " \t"), nil
}

// readLine returns the next line without its CRLF, charging its length to
// budget. A line must end in CRLF: a bare LF is refused, which RFC 9112
// §2.2 allows, rather than accepted, which it also allows, so that no
// other reader of these bytes can see lines where h1 did not.
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
		return nil, protocolError("field section too large")
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, protocolError("line not ended by CRLF")
	}
	return line[:n-2], nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// chunkState is where a chunked body is in its framing.
type chunkState uint8

const (
	chunkSize    chunkState = iota // before a chunk-size line
	chunkData                      // in a chunk's data
	chunkEnd                       // before the CRLF after a chunk's data
	chunkTrailer                   // before the trailer section
)

// Chunk framing limits.
const (
	// maxChunkDigits bounds the hex digits of a chunk size, leading zeros
	// included (net/http refuses a 17th).
	maxChunkDigits = 16
	// maxChunkOverhead bounds the framing bytes (size lines, extensions,
	// CRLFs) not yet paid for by data, each chunk paying for 16 bytes plus
	// twice its size: net/http's rule. Extensions cost the sender nothing
	// and are thrown away here.
	maxChunkOverhead = 16 << 10
)

// body reads a response body and hands the connection back to the pool
// once it is read to its end, or closes it.
type body struct {
	cn *conn // nil once released
	// remaining is what is left of a Content-Length body or of the current
	// chunk; -1 for a body that ends when the upstream closes.
	remaining int64
	chunked   bool
	state     chunkState
	overhead  int64 // chunk framing not yet paid for (maxChunkOverhead)
	keepAlive bool
	stop      func() bool // detaches the context; false if it fired
	err       error       // sticky read error (io.EOF at the end)
}

// Read implements io.Reader. Bad chunked framing fails it with ErrProtocol
// (wrapped), a body cut short with io.ErrUnexpectedEOF, and BodyIdleTimeout
// with a net.Error timeout; each closes the connection.
func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	var n int
	var err error
	switch {
	case b.chunked:
		n, err = b.readChunked(p)
	case b.remaining == 0:
		err = io.EOF
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

// readChunked reads chunk data into p and the framing around it (RFC 9112
// §7.1). It reads data from the connection at most once per call, before it
// has any, and then goes on through as many chunks as the buffered bytes
// hold, so data already read is neither held back waiting for the next
// chunk nor handed out one chunk per call.
func (b *body) readChunked(p []byte) (n int, err error) {
	br := b.cn.br
	for {
		switch b.state {
		case chunkSize:
			if n > 0 && !lineBuffered(br) {
				return n, nil
			}
			size, err := b.readChunkSize()
			if err != nil {
				return n, err
			}
			if size == 0 {
				b.state = chunkTrailer
				continue
			}
			b.remaining, b.state = size, chunkData
		case chunkData:
			// Past the first chunk, only what is already buffered: a
			// burst of small chunks (SSE events) comes back in one call,
			// so the caller flushes once per burst, not once per chunk.
			if n == len(p) || (n > 0 && br.Buffered() == 0) {
				return n, nil
			}
			q := p[n:]
			if int64(len(q)) > b.remaining {
				q = q[:b.remaining]
			}
			m, err := br.Read(q)
			n += m
			b.remaining -= int64(m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			if b.remaining == 0 {
				b.state = chunkEnd
			}
		case chunkEnd:
			if n > 0 && br.Buffered() < 2 {
				return n, nil
			}
			crlf, err := br.Peek(2)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			if crlf[0] != '\r' || crlf[1] != '\n' {
				return n, protocolError("chunk data not followed by CRLF")
			}
			_, _ = br.Discard(2)
			b.state = chunkSize
		case chunkTrailer:
			if n > 0 && !trailerBuffered(br) {
				return n, nil
			}
			if err := b.cn.readTrailer(); err != nil {
				return n, err
			}
			return n, io.EOF
		}
	}
}

// lineBuffered reports whether a whole line is buffered in br.
func lineBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// trailerBuffered reports whether a whole trailer section is buffered in
// br: an empty one, or field lines up to an empty line.
func trailerBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.HasPrefix(buf, []byte("\r\n")) || bytes.Contains(buf, []byte("\r\n\r\n"))
}

// readChunkSize reads a chunk-size line: hex digits, optionally ';' and
// chunk extensions (ignored), then CRLF. The line must fit in the read
// buffer. Whitespace before the ';' is refused: RFC 9112 allows it, but
// net/http does not, and h1 reads nothing net/http would not.
func (b *body) readChunkSize() (int64, error) {
	line, err := b.cn.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return 0, protocolError("chunk size line too long")
	case errors.Is(err, io.EOF):
		return 0, io.ErrUnexpectedEOF
	case err != nil:
		return 0, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return 0, protocolError("chunk size line not ended by CRLF: %q", truncate(line))
	}
	line = line[:n-2]
	var size int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i == maxChunkDigits || size > math.MaxInt64>>4 {
			return 0, protocolError("chunk size too large: %q", truncate(line))
		}
		size = size<<4 | int64(d)
	}
	if i == 0 {
		return 0, protocolError("malformed chunk size line %q", truncate(line))
	}
	if ext := line[i:]; len(ext) > 0 {
		if ext[0] != ';' {
			return 0, protocolError("malformed chunk size line %q", truncate(line))
		}
		for _, c := range ext[1:] {
			if !fieldValueByte(c) {
				return 0, protocolError("malformed chunk extension %q", truncate(line))
			}
		}
	}
	b.overhead += int64(len(line)) + 2 // the line and the CRLF after the data
	b.overhead = max(b.overhead-16-2*min(size, 1<<40), 0)
	if b.overhead > maxChunkOverhead {
		return 0, protocolError("too much chunk framing for its data")
	}
	return size, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// readTrailer reads the trailer section after the last chunk, checking
// each field line as readHeader does, and throws it away: the Client
// relays no trailers. Like net/http, it refuses a trailer section larger
// than the read buffer.
func (cn *conn) readTrailer() error {
	budget := readBufferSize
	for {
		line, err := cn.readLine(&budget)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if _, _, err := splitField(line); err != nil {
			return err
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
		if cn.sock.idle > 0 {
			// The body's last deadline must not cut the next exchange.
			cn.sock.idle, cn.sock.at = 0, time.Time{}
			if err := cn.nc.SetReadDeadline(time.Time{}); err != nil {
				_ = cn.nc.Close()
				return
			}
		}
		cn.client.put(cn)
		return
	}
	_ = cn.nc.Close()
}

// Close implements io.Closer. Closing before the end closes the
// connection.
func (b *body) Close() error {
	complete := errors.Is(b.err, io.EOF) || (!b.chunked && b.remaining == 0)
	if b.err == nil {
		b.err = errors.New("h1: read on closed body")
	}
	b.finish(complete)
	return nil
}
