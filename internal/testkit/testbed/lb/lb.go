// Package lb is a small round-robin HTTP load balancer for the test bed: it
// health-checks every backend's readiness endpoint, skips backends that are
// not ready, and retries a request on the next backend only when no
// connection to the chosen one could be established (such a request never
// reached a backend, so retrying it is safe). Responses, SSE streams
// included, pass through unbuffered.
package lb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Balancer.
type Options struct {
	// Backends are the backends' base URLs (http://host:port).
	Backends []string
	// HealthPath is checked on every backend (default "/readyz"); a 200
	// marks it ready, anything else or no answer marks it unready.
	HealthPath string
	// Interval is the time between health checks (default 100ms).
	Interval time.Duration
	// MaxBodyBytes bounds a buffered request body (default 32 MiB).
	MaxBodyBytes int64
	// Logger receives backend state changes (default: discard).
	Logger *slog.Logger
}

type backend struct {
	url   *url.URL
	ready atomic.Bool
}

// Balancer is the load balancer. Start serves it; it is also an
// http.Handler.
type Balancer struct {
	opts     Options
	backends []*backend
	next     atomic.Uint64
	retries  atomic.Int64
	proxy    *http.Transport
	health   *http.Client

	// URL is the balancer's address (http://host:port) once started.
	URL string
	srv *http.Server
	ln  net.Listener

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Start listens on addr ("127.0.0.1:0" for a free port), checks every
// backend once, and then serves and health-checks until Close.
func Start(addr string, opts Options) (*Balancer, error) {
	if len(opts.Backends) == 0 {
		return nil, errors.New("lb: no backends")
	}
	if opts.HealthPath == "" {
		opts.HealthPath = "/readyz"
	}
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 32 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Balancer{
		opts: opts,
		proxy: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		health: &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
	}
	for _, raw := range opts.Backends {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("lb: backend %q is not a base URL", raw)
		}
		b.backends = append(b.backends, &backend{url: u})
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	b.ln, b.URL = ln, "http://"+ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	var first sync.WaitGroup
	for _, be := range b.backends {
		first.Add(1)
		b.wg.Add(1)
		go b.watch(ctx, be, first.Done)
	}
	first.Wait()
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = b.srv.Serve(ln)
	}()
	return b, nil
}

// Close stops serving (cutting open requests) and health checking.
func (b *Balancer) Close() error {
	err := b.srv.Close()
	b.stop()
	b.wg.Wait()
	b.proxy.CloseIdleConnections()
	return err
}

// Ready reports whether backend i passed its latest health check.
func (b *Balancer) Ready(i int) bool { return b.backends[i].ready.Load() }

// Retries is how many requests were sent to another backend because the
// connection to the first choice failed.
func (b *Balancer) Retries() int64 { return b.retries.Load() }

// watch health-checks be every Interval until ctx ends, calling first after
// the first check.
func (b *Balancer) watch(ctx context.Context, be *backend, first func()) {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.Interval)
	defer t.Stop()
	for {
		ok := b.check(ctx, be)
		if was := be.ready.Swap(ok); was != ok {
			b.opts.Logger.Info("backend state changed", "backend", be.url.Host, "ready", ok)
		}
		if first != nil {
			first()
			first = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Balancer) check(ctx context.Context, be *backend) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, be.url.JoinPath(b.opts.HealthPath).String(), nil)
	if err != nil {
		return false
	}
	resp, err := b.health.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// candidates lists the backends to try, in round-robin order: the ready
// ones, or every backend when none is ready (a health check that fails
// everywhere more likely reports a shared dependency than dead backends).
func (b *Balancer) candidates() []*backend {
	n := len(b.backends)
	start := int(b.next.Add(1) % uint64(n))
	out := make([]*backend, 0, n)
	for i := range n {
		if be := b.backends[(start+i)%n]; be.ready.Load() {
			out = append(out, be)
		}
	}
	if len(out) == 0 {
		for i := range n {
			out = append(out, b.backends[(start+i)%n])
		}
	}
	return out
}

// hopHeaders are connection-specific and never forwarded (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// ServeHTTP forwards r to a backend.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.opts.MaxBodyBytes))
	if err != nil {
		http.Error(w, "lb: read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var resp *http.Response
	for i, be := range b.candidates() {
		if i > 0 {
			b.retries.Add(1)
		}
		resp, err = b.proxy.RoundTrip(outgoing(r, be.url, body))
		if err == nil || !isDialError(err) {
			break
		}
	}
	if err != nil {
		status := http.StatusBadGateway
		if r.Context().Err() != nil {
			status = 499
		}
		http.Error(w, "lb: "+err.Error(), status)
		return
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if rerr != nil {
			return
		}
	}
}

// outgoing is r addressed to target with a replayable copy of its body.
func outgoing(r *http.Request, target *url.URL, body []byte) *http.Request {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = target.Scheme, target.Host
	out.Host = r.Host
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.ContentLength, out.TransferEncoding = int64(len(body)), nil
	out.Body = http.NoBody
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(body) > 0 {
		out.Body, _ = out.GetBody()
	}
	return out
}

// isDialError reports whether err means no connection to the backend was
// established.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
