package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// An upstream that sends its head and a first event, then falls silent, is
// cut after UpstreamIdleTimeout (504 after writing), on the direct path
// and through an egress proxy.
func TestForwardUpstreamGoesSilent(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(silent.Close)
	silentURL, _ := url.Parse(silent.URL)
	const idle = 300 * time.Millisecond
	for _, tc := range []struct {
		name  string
		proxy func(*url.URL) (*url.URL, error)
		base  string
	}{
		{"direct", nil, silent.URL},
		// The egress proxy here is the upstream itself: an absolute-form
		// request is served like any other by net/http.
		{"egress proxy", func(*url.URL) (*url.URL, error) { return silentURL, nil }, "http://upstream.example/v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New(Options{UpstreamTimeout: 5 * time.Second, UpstreamIdleTimeout: idle, Proxy: tc.proxy})
			t.Cleanup(f.Close)
			h := newHarness(t, f, Upstream{BaseURL: tc.base, APIKey: "k"})
			// Without the idle timeout the client gives up first (499).
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			resp := post(t, ctx, h.url+"/v1/chat/completions", `{"model":"m","stream":true}`, nil)
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			o := h.outcome(t)
			took := time.Since(start)
			var perr *Error
			if !errors.As(o.res.Err, &perr) || perr.Status != http.StatusGatewayTimeout || !o.wrote {
				t.Errorf("result %+v wrote=%v, want 504 after writing", o.res, o.wrote)
			}
			if took < idle || took > idle+3*time.Second {
				t.Errorf("cut after %s, want about %s", took, idle)
			}
		})
	}
}
