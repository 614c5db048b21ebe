// Package baseline is the benchmark's reference point: a plain
// httputil.ReverseProxy that does the proxy's forwarding job (same path,
// same body, same upstream, the client's credentials swapped for the
// upstream key) without any gateway feature. Tooling only.
package baseline

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// New returns a reverse proxy to upstream (scheme and host; the client's
// path is kept) that sends "Authorization: Bearer apiKey". Its transport
// keeps enough idle connections for the benchmark's highest concurrency,
// speaks HTTP/1.1 like the proxy's, and every write is flushed at once so
// SSE events pass through as they arrive.
//
// The client's body is read whole before forwarding, as the proxy does:
// streaming it lets net/http's server discard the unread rest of the body
// while the transport still reads it, which now and then breaks the
// upstream connection mid-answer ("use of closed network connection").
func New(upstream *url.URL, apiKey string) http.Handler {
	bearer := "Bearer " + apiKey
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = upstream.Host
			r.Out.Header.Set("Authorization", bearer)
		},
		Transport:     NewTransport(),
		FlushInterval: -1,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		rp.ServeHTTP(w, r)
	})
}

// NewTransport is the tuned upstream transport.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		DisableCompression:    true,
	}
}
