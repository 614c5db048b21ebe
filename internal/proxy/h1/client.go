// Package h1 is the small HTTP/1.1 client the proxy sends upstream calls
// with.
//
// net/http's Transport runs a read and a write goroutine per connection and
// hands each request and response between them over channels; for a gateway
// that forwards many small requests over keep-alive connections those
// hand-offs, and the allocations around them, cost more than the gateway's
// own work. A Client does the whole exchange on the caller's goroutine: one
// write of the request head and body, a buffered read of the response head,
// and a body reader that puts the connection back into an idle pool once the
// body has been read to its end.
//
// It speaks HTTP/1.1 over TCP or TLS only: no HTTP/2, no proxies, no
// redirects, no Accept-Encoding of its own and no decompression. Callers
// that need those keep net/http for them.
package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero Options fields.
const (
	DefaultDialTimeout = 30 * time.Second
	DefaultIdleTimeout = 90 * time.Second
)

const (
	// maxIdlePerHost caps the idle connections kept per host.
	maxIdlePerHost = 256
	// readBufferSize is each connection's read buffer: every idle
	// connection keeps one, so it trades resident memory for syscalls.
	readBufferSize = 4 << 10
)

// maxHeaderBytes bounds a response head; a larger one fails the call.
const maxHeaderBytes = 1 << 20

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("h1: client closed")

// ErrProtocol is wrapped by the errors of Do and of response body reads
// when the upstream's response is not well-framed HTTP/1.1 (RFC 9112), or
// is one the Client never asks for: any 1xx, since it sends neither
// Expect: 100-continue nor Upgrade. The connection it came on is closed.
// Callers map it to 502 Bad Gateway.
var ErrProtocol = errors.New("h1: upstream protocol error")

// protocolError returns an error wrapping ErrProtocol.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// Options configures a Client. Zero fields take the defaults above.
type Options struct {
	// DialTimeout bounds connecting, TLS handshake included.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the
	// request is written; zero means no limit (the context still applies).
	ResponseHeaderTimeout time.Duration
	// BodyIdleTimeout bounds each wait for more of a response body once
	// the head has arrived: when the upstream sends nothing for this long,
	// the body read fails with an error that is a net.Error whose Timeout
	// reports true, and the connection is closed. It bounds silence, not
	// the whole body, and not the wait for the head. Zero means no limit
	// (the context still applies).
	BodyIdleTimeout time.Duration
	// IdleTimeout closes connections left idle longer than this.
	IdleTimeout time.Duration
	// TLSConfig is cloned for https hosts (ServerName and ALPN set per
	// host); nil means the system roots.
	TLSConfig *tls.Config
}

// Client sends requests over pooled keep-alive connections. It is safe for
// concurrent use; Close closes its idle connections.
type Client struct {
	opts   Options
	dialer net.Dialer
	// dialTCP is dialer.DialContext; tests swap in in-memory connections.
	dialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	heads   sync.Pool // *[]byte request heads

	mu     sync.Mutex
	idle   map[string][]*conn // by scheme://host:port, most recently used last
	closed bool

	done    chan struct{} // closed by Close: stops the sweeper
	sweeper sync.WaitGroup
}

// Request is one upstream request.
type Request struct {
	Method string
	// URL is absolute, http or https; its host is dialled and sent as Host.
	URL *url.URL
	// Header is sent as it is, minus Host, Content-Length and hop-by-hop
	// headers, which the Client writes itself.
	Header http.Header
	// Body is the whole body; Content-Length is its length.
	Body []byte
}

// New returns a Client.
func New(opts Options) *Client {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	c := &Client{
		opts:   opts,
		dialer: net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		idle:   make(map[string][]*conn),
		done:   make(chan struct{}),
	}
	c.dialTCP = c.dialer.DialContext
	c.heads.New = func() any {
		b := make([]byte, 0, 2<<10)
		return &b
	}
	c.sweeper.Go(c.sweep)
	return c
}

// sweep closes connections idle longer than IdleTimeout, so hosts no
// longer called (a deactivated project's upstream) do not keep sockets
// open until Close.
func (c *Client) sweep() {
	tick := time.NewTicker(c.opts.IdleTimeout / 2)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-tick.C:
			c.closeIdleSince(now.Add(-c.opts.IdleTimeout))
		}
	}
}

// closeIdleSince closes the pooled connections idle since before cutoff.
func (c *Client) closeIdleSince(cutoff time.Time) {
	var stale []*conn
	c.mu.Lock()
	for key, conns := range c.idle {
		n := 0
		for n < len(conns) && conns[n].idleSince.Before(cutoff) {
			n++
		}
		if n == 0 {
			continue
		}
		stale = append(stale, conns[:n]...)
		if n == len(conns) {
			delete(c.idle, key)
		} else {
			rest := copy(conns, conns[n:])
			clear(conns[rest:])
			c.idle[key] = conns[:rest]
		}
	}
	c.mu.Unlock()
	for _, cn := range stale {
		_ = cn.nc.Close()
	}
}

// Close closes the idle connections and makes later calls fail with
// ErrClosed. Responses in flight finish; their connections are closed when
// done instead of pooled.
func (c *Client) Close() {
	c.mu.Lock()
	idle, wasClosed := c.idle, c.closed
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	if !wasClosed {
		close(c.done)
		c.sweeper.Wait()
	}
	for _, conns := range idle {
		for _, cn := range conns {
			_ = cn.nc.Close()
		}
	}
}

// Do sends req and reads the response head. The caller must close the
// response body; reading it to the end returns the connection to the pool.
//
// Cancelling ctx aborts the call and any read of the body. Errors are
// net.Error timeouts when ResponseHeaderTimeout (or a cancelled ctx) cut
// the wait, *net.OpError with Op "dial" when the host could not be reached,
// ErrProtocol (wrapped) when the response is malformed or unsolicited,
// io.ErrUnexpectedEOF when it is cut short, and others for I/O failures.
// A request whose write fails on a reused connection (the upstream closed
// it while idle) is sent once more on a new one: it never reached the
// upstream. Nothing else is retried.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	key, addr, serverName, err := target(req.URL)
	if err != nil {
		return nil, err
	}
	bp := c.heads.Get().(*[]byte)
	defer c.heads.Put(bp)
	head, err := appendHead((*bp)[:0], req)
	if err != nil {
		return nil, err
	}
	*bp = head
	for {
		cn, err := c.get(ctx, key, addr, serverName)
		if err != nil {
			return nil, err
		}
		resp, err := cn.roundTrip(ctx, req.Method, head, req.Body)
		if err == nil {
			return resp, nil
		}
		_ = cn.nc.Close()
		var we *writeError
		if !cn.reused || !errors.As(err, &we) || ctx.Err() != nil {
			return nil, err
		}
	}
}

func target(u *url.URL) (key, addr, serverName string, err error) {
	if u == nil || u.Host == "" {
		return "", "", "", errors.New("h1: request URL has no host")
	}
	host, port := u.Hostname(), u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
		serverName = host
	default:
		return "", "", "", errors.New("h1: unsupported URL scheme " + u.Scheme)
	}
	addr = net.JoinHostPort(host, port)
	return u.Scheme + "://" + addr, addr, serverName, nil
}

// get returns an idle connection that is still open, or dials one.
func (c *Client) get(ctx context.Context, key, addr, serverName string) (*conn, error) {
	now := time.Now()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		conns := c.idle[key]
		if len(conns) == 0 {
			c.mu.Unlock()
			break
		}
		cn := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		c.idle[key] = conns[:len(conns)-1]
		c.mu.Unlock()
		if now.Sub(cn.idleSince) < c.opts.IdleTimeout && cn.br.Buffered() == 0 && alive(cn.raw) {
			cn.reused = true
			return cn, nil
		}
		_ = cn.nc.Close()
	}
	return c.dial(ctx, key, addr, serverName)
}

func (c *Client) dial(ctx context.Context, key, addr, serverName string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	raw, err := c.dialTCP(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc := raw
	if serverName != "" {
		cfg := &tls.Config{}
		if c.opts.TLSConfig != nil {
			cfg = c.opts.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = serverName
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		nc = tc
	}
	return newConn(c, key, nc, raw), nil
}

// put pools cn after a complete exchange, or closes it.
func (c *Client) put(cn *conn) {
	cn.reused = false
	cn.idleSince = time.Now()
	c.mu.Lock()
	if !c.closed && len(c.idle[cn.key]) < maxIdlePerHost {
		c.idle[cn.key] = append(c.idle[cn.key], cn)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	_ = cn.nc.Close()
}

// validHeader reports whether s can be written in a header line as it is.
func validHeader(s string) bool { return !strings.ContainsAny(s, "\r\n\x00") }
