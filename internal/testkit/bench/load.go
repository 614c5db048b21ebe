package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Load is one closed-loop run: Concurrency workers each send a request,
// read the whole answer, and send the next, until Duration has passed.
type Load struct {
	URL         string
	Header      http.Header // copied into every request
	Body        []byte
	Concurrency int
	Duration    time.Duration
	// MinBytes is the shortest answer body counted as a success; shorter
	// ones (a truncated stream) count as errors.
	MinBytes int
}

// LoadResult is what a run measured.
type LoadResult struct {
	Requests int           // successful requests
	Errors   int           // transport errors, non-200 answers, short bodies
	FirstErr string        // the first error, for the report
	Elapsed  time.Duration // from the first request to the last answer
	Latency  []time.Duration
	TTFB     []time.Duration // time to the first body byte
}

// RPS is the successful requests per second.
func (r LoadResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// NewClient returns a keep-alive HTTP/1.1 client with enough idle
// connections for maxConc workers. Call CloseIdleConnections when done.
func NewClient(maxConc int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConc * 2,
		MaxIdleConnsPerHost: maxConc * 2,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
}

// RunLoad runs l with client and returns the sorted latencies. A request
// still running when ctx ends counts as an error.
func RunLoad(ctx context.Context, client *http.Client, l Load) LoadResult {
	type worker struct {
		lat, ttfb []time.Duration
		errs      int
		firstErr  string
	}
	workers := make([]worker, l.Concurrency)
	start := time.Now()
	deadline := start.Add(l.Duration)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				lat, ttfb, err := doRequest(ctx, client, l, buf)
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					continue
				}
				w.lat = append(w.lat, lat)
				w.ttfb = append(w.ttfb, ttfb)
			}
		})
	}
	wg.Wait()
	res := LoadResult{Elapsed: time.Since(start)}
	for _, w := range workers {
		res.Latency = append(res.Latency, w.lat...)
		res.TTFB = append(res.TTFB, w.ttfb...)
		res.Errors += w.errs
		if res.FirstErr == "" {
			res.FirstErr = w.firstErr
		}
	}
	res.Requests = len(res.Latency)
	slices.Sort(res.Latency)
	slices.Sort(res.TTFB)
	return res
}

// doRequest sends one request and reads the answer to its end.
func doRequest(ctx context.Context, client *http.Client, l Load, buf []byte) (lat, ttfb time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL, bytes.NewReader(l.Body))
	if err != nil {
		return 0, 0, fmt.Errorf("new request: %w", err)
	}
	req.Header = l.Header.Clone()
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n := 0
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 && n == 0 {
			ttfb = time.Since(start)
		}
		n += k
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, 0, fmt.Errorf("read answer: %w", rerr)
		}
	}
	lat = time.Since(start)
	if resp.StatusCode != http.StatusOK {
		snippet := buf[:0]
		if n > 0 && n <= len(buf) {
			snippet = buf[:min(n, 200)]
		}
		return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(snippet))
	}
	if n < l.MinBytes {
		return 0, 0, fmt.Errorf("short answer: %d bytes, want at least %d", n, l.MinBytes)
	}
	return lat, ttfb, nil
}
