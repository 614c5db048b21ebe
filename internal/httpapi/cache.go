package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// The response cache (SPEC §6.7): a request opts in with Cache-Control:
// max-age=N, or through its project's cache_ttl_seconds; a fresh entry of
// the same project, endpoint, model and canonical body answers it without
// the upstream, counted as a request but not as tokens.

// Cache results, the values of llm_cache_requests_total's label.
const (
	cacheHit  = "hit"
	cacheMiss = "miss"
	cacheSkip = "skip" // asked for, but the request cannot be cached
)

// maxCacheTTL bounds max-age: longer asks are served as this.
const maxCacheTTL = 30 * 24 * time.Hour

// cacheLookup is a cacheable request's key and freshness.
type cacheLookup struct {
	key string
	ttl time.Duration
}

// cacheRequest returns the lookup of a request that asks for the cache and
// can use it; ok is false otherwise. A request that neither sends
// Cache-Control nor belongs to a project with a default TTL costs two map
// reads: its body is not hashed or copied.
func (s *Server) cacheRequest(r *http.Request, p *auth.Principal, info proxy.Info, body []byte) (l cacheLookup, ok bool) {
	if s.d.Cache == nil {
		return l, false
	}
	ttl, asked := cacheTTL(r.Header["Cache-Control"], p.Project.CacheTTLSeconds)
	if !asked {
		return l, false
	}
	if ttl <= 0 || r.Method != http.MethodPost || !jsonEndpoint(r.URL.Path) || info.Stream {
		s.cacheResult(cacheSkip)
		return l, false
	}
	key, err := cache.Key(cache.Request{ProjectID: p.Project.ID, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Model: info.Model, Header: r.Header, Body: body})
	if err != nil {
		s.cacheResult(cacheSkip)
		return l, false
	}
	return cacheLookup{key: key, ttl: ttl}, true
}

// cacheTTL reads the request's Cache-Control directives: no-store and
// no-cache turn the cache off, max-age=N sets the TTL and the oldest entry
// accepted, and without either the project default applies. asked reports
// whether the request has anything to do with the cache. A max-age that is
// not a plain number, or given twice, turns the cache off.
func cacheTTL(values []string, projectTTL int) (ttl time.Duration, asked bool) {
	ttl = time.Duration(max(projectTTL, 0)) * time.Second
	if len(values) == 0 {
		return ttl, ttl > 0
	}
	maxAge := false
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseUint(arg, 10, 64)
				if err != nil || maxAge {
					return 0, true
				}
				maxAge = true
				ttl = time.Duration(min(n, uint64(maxCacheTTL/time.Second))) * time.Second
			}
		}
	}
	return ttl, true
}

// serveCached answers from e when it is a fresh 200 for l, reconciling the
// admitted request with no tokens and recording a cached usage row.
func (s *Server) serveCached(c echo.Context, l cacheLookup, p *auth.Principal, limits []ratelimit.Request, start time.Time, reqID string) bool {
	ctx := c.Request().Context()
	e, ok := s.d.Cache.Get(ctx, l.key)
	age := start.Sub(e.Created)
	if !ok || e.Status != http.StatusOK || age >= l.ttl {
		return false
	}
	s.cacheResult(cacheHit)
	w := c.Response()
	h := w.Header()
	for k, vv := range e.Header {
		h[k] = vv
	}
	h.Set("X-Cache", "HIT")
	h.Set("Age", strconv.FormatInt(int64(max(age, 0)/time.Second), 10))
	h.Set(echo.HeaderContentLength, strconv.Itoa(len(e.Body)))
	w.WriteHeader(e.Status)
	status := e.Status
	if _, err := w.Write(e.Body); err != nil {
		status = proxy.StatusClientClosedRequest
	}
	s.d.Admission.Reconcile(ctx, limits, 0)
	tokenID, agentID, userID := usageIdentity(p)
	s.d.Recorder.Usage(store.Usage{
		CreatedAt:        start.UTC(),
		RequestID:        reqID,
		ProjectID:        p.Project.ID,
		TokenID:          tokenID,
		AgentTokenID:     agentID,
		UserID:           userID,
		Model:            e.Model,
		Endpoint:         c.Request().URL.Path,
		Status:           status,
		PromptTokens:     e.PromptTokens,
		CompletionTokens: e.CompletionTokens,
		TotalTokens:      e.TotalTokens,
		Latency:          time.Since(start),
		Cached:           true,
	})
	return true
}

// storeCached keeps a complete 200 JSON answer that tw captured.
func (s *Server) storeCached(ctx context.Context, l cacheLookup, tw *cacheWriter, res *proxy.Result, start time.Time) {
	if res.Err != nil || res.Status != http.StatusOK || res.Streamed || !tw.keep {
		return
	}
	e := cache.Entry{Status: http.StatusOK, Header: http.Header{"Content-Type": slices.Clone(tw.Header()["Content-Type"])},
		Body: tw.body, Model: res.Model, PromptTokens: res.Usage.PromptTokens,
		CompletionTokens: res.Usage.CompletionTokens, TotalTokens: res.Usage.TotalTokens, Created: start}
	s.d.Cache.Set(context.WithoutCancel(ctx), l.key, e, l.ttl)
}

func (s *Server) cacheResult(result string) {
	if s.d.Metrics != nil {
		s.d.Metrics.CacheRequest(result)
	}
}

// cacheWriter relays a response to the client and keeps a copy of its body
// when it may be stored: a 200 JSON answer, neither an event stream nor
// encoded, of at most max bytes. It marks every answer X-Cache: MISS.
type cacheWriter struct {
	http.ResponseWriter
	max  int64
	keep bool
	body []byte
}

func (w *cacheWriter) WriteHeader(status int) {
	h := w.Header()
	h.Set("X-Cache", "MISS")
	ct := strings.ToLower(h.Get("Content-Type"))
	w.keep = status == http.StatusOK && strings.Contains(ct, "json") && !strings.HasPrefix(ct, "text/event-stream") &&
		h.Get("Content-Encoding") == ""
	if n, err := strconv.ParseInt(h.Get(echo.HeaderContentLength), 10, 64); w.keep && err == nil {
		if n > w.max {
			w.keep = false
		} else {
			w.body = make([]byte, 0, n)
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *cacheWriter) Write(p []byte) (int, error) {
	if w.keep {
		if int64(len(w.body)+len(p)) > w.max {
			w.keep, w.body = false, nil
		} else {
			w.body = append(w.body, p...)
		}
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the client connection (flush).
func (w *cacheWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
