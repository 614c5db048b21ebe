// Package telemetry sets up logging and Prometheus metrics (SPEC §6.3, §8).
package telemetry

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// Metrics holds the proxy's Prometheus collectors in a registry of its own
// (no global registry). Label values are bounded and never name anyone
// (SPEC §6.3): routes are echo route patterns, never raw paths; projects are
// labelled by ID; no token IDs or prefixes, no emails. Project names appear
// only in llm_project_info, which Handler serves only when asked to.
type Metrics struct {
	reg *prometheus.Registry

	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	InFlight     prometheus.Gauge
	upstream     *prometheus.HistogramVec
	ttfb         *prometheus.HistogramVec
	overhead     prometheus.Histogram
	tokens       *prometheus.CounterVec
	rateDecision *prometheus.CounterVec
	dependencyUp *prometheus.GaugeVec
	cacheResults *prometheus.CounterVec

	// requestObs caches the request counter and histogram of each label
	// set (bounded: route patterns × known methods × statuses), sparing
	// the per-request label hashing of WithLabelValues.
	requestObs sync.Map // requestKey → requestObs
	// models holds the model label values in use, at most maxModels.
	models     sync.Map // string → struct{}
	modelCount atomic.Int64
}

type requestKey struct {
	route, method string
	status        int
}

type requestObs struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// maxModels bounds the distinct model label values; later models count
// under "other". Models come from requests and answers, so a client could
// otherwise mint label values at will.
const maxModels = 256

// latencyBuckets span sub-millisecond proxy overhead to multi-minute streams.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// NewMetrics registers every collector; RegisterPool, RegisterRedis and
// RegisterQueue add the figures read at scrape time.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "HTTP request latency by route pattern and status.", Buckets: latencyBuckets,
		}, []string{"route", "status"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_requests_in_flight", Help: "Requests being served.",
		}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "upstream_request_duration_seconds", Help: "Time spent on the upstream call, streams included.", Buckets: latencyBuckets,
		}, []string{"provider"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "upstream_time_to_first_byte_seconds", Help: "Time from sending the upstream request to its first response byte.", Buckets: latencyBuckets,
		}, []string{"provider"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "proxy_overhead_seconds", Help: "Time spent in the gateway before the response headers, upstream wait excluded (the proxy part of Server-Timing).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llm_tokens_total", Help: "LLM tokens by model, project ID and kind (prompt|completion); llm_project_info maps IDs to names.",
		}, []string{"model", "project_id", "kind"}),
		rateDecision: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimit_decisions_total", Help: "Rate-limit and quota decisions by limit and outcome.",
		}, []string{"limit", "decision"}),
		dependencyUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llm_dependency_up", Help: "1 when the readiness check of the dependency (database, redis, schema) last passed, 0 while it is degraded or failing.",
		}, []string{"dependency"}),
		cacheResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llm_cache_requests_total", Help: "Requests that asked for the response cache, by result: hit, miss (looked up, forwarded), skip (not cacheable: no-store, streaming, not JSON).",
		}, []string{"result"}),
	}
	for _, r := range []string{"hit", "miss", "skip"} {
		m.cacheResults.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.duration, m.InFlight, m.upstream, m.ttfb, m.overhead, m.tokens, m.rateDecision, m.dependencyUp, m.cacheResults,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveRequest counts one finished HTTP request. Methods outside the
// standard set count as "other".
func (m *Metrics) ObserveRequest(route, method string, status int, d time.Duration) {
	key := requestKey{route, knownMethod(method), status}
	v, ok := m.requestObs.Load(key)
	if !ok {
		s := strconv.Itoa(status)
		v, _ = m.requestObs.LoadOrStore(key, requestObs{
			count:    m.requests.WithLabelValues(key.route, key.method, s),
			duration: m.duration.WithLabelValues(key.route, s),
		})
	}
	o := v.(requestObs)
	o.count.Inc()
	o.duration.Observe(d.Seconds())
}

func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
		return m
	}
	return "other"
}

// modelLabel returns model as a label value: truncated to 64 bytes, and
// "other" once maxModels distinct values are in use.
func (m *Metrics) modelLabel(model string) string {
	if len(model) > 64 {
		model = model[:64]
	}
	if _, ok := m.models.Load(model); ok {
		return model
	}
	if m.modelCount.Add(1) > maxModels {
		m.modelCount.Add(-1)
		return "other"
	}
	if _, loaded := m.models.LoadOrStore(model, struct{}{}); loaded {
		m.modelCount.Add(-1)
	}
	return model
}

// ObserveUpstream records one upstream call: its whole duration, the time
// to its first byte and the gateway's own overhead (the two figures of
// Server-Timing).
func (m *Metrics) ObserveUpstream(provider string, total, ttfb, overhead time.Duration) {
	m.upstream.WithLabelValues(provider).Observe(total.Seconds())
	if ttfb > 0 {
		m.ttfb.WithLabelValues(provider).Observe(ttfb.Seconds())
		m.overhead.Observe(max(overhead, 0).Seconds())
	}
}

// AddTokens counts LLM tokens of one request under the project's ID (never
// its name: see Metrics).
func (m *Metrics) AddTokens(model, projectID string, prompt, completion int) {
	if prompt <= 0 && completion <= 0 {
		return
	}
	model = m.modelLabel(model)
	if prompt > 0 {
		m.tokens.WithLabelValues(model, projectID, "prompt").Add(float64(prompt))
	}
	if completion > 0 {
		m.tokens.WithLabelValues(model, projectID, "completion").Add(float64(completion))
	}
}

// RateDecision counts one limit decision; limit is e.g. "rate" or "quota",
// decision "allowed" or "limited".
func (m *Metrics) RateDecision(limit, decision string) {
	m.rateDecision.WithLabelValues(limit, decision).Inc()
}

// SetDependencyUp records the latest readiness verdict of a dependency as
// llm_dependency_up. dependency must come from a fixed set named in code.
func (m *Metrics) SetDependencyUp(dependency string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.dependencyUp.WithLabelValues(dependency).Set(v)
}

// Handler serves the registry in the Prometheus text format. With projects
// set it also serves llm_project_info{project_id,name} 1 for every project:
// project names, which SPEC §6.3 allows only on a /metrics that requires
// METRICS_TOKEN, so callers pass projects only then. Names are read through
// projects at most once per projectInfoTTL.
func (m *Metrics) Handler(projects ProjectNames) http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	if projects == nil {
		return h
	}
	info := newProjectInfo(projects, projectInfoTTL)
	private := prometheus.NewRegistry()
	private.MustRegister(info)
	h = promhttp.HandlerFor(prometheus.Gatherers{m.reg, private}, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info.refresh(r.Context())
		h.ServeHTTP(w, r)
	})
}

// Gatherer returns the registry Handler serves (without llm_project_info),
// for the console's cluster page.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// RegisterPool exports database pool figures as database_* metrics, read
// from stats at scrape time.
func (m *Metrics) RegisterPool(driver string, stats func() store.PoolStats) {
	labels := prometheus.Labels{"driver": driver}
	gauge := func(name, help string, f func(store.PoolStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return f(stats()) })
	}
	counter := func(name, help string, f func(store.PoolStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return f(stats()) })
	}
	m.reg.MustRegister(
		gauge("database_connections_max", "Maximum open connections.", func(s store.PoolStats) float64 { return float64(s.MaxConns) }),
		gauge("database_connections_total", "Open connections.", func(s store.PoolStats) float64 { return float64(s.TotalConns) }),
		gauge("database_connections_idle", "Idle connections.", func(s store.PoolStats) float64 { return float64(s.IdleConns) }),
		gauge("database_connections_in_use", "Connections in use.", func(s store.PoolStats) float64 { return float64(s.InUseConns) }),
		counter("database_acquire_total", "Connection acquisitions (waits on SQLite).", func(s store.PoolStats) float64 { return float64(s.AcquireCount) }),
		counter("database_acquire_wait_seconds_total", "Cumulative time spent waiting for a connection.", func(s store.PoolStats) float64 { return s.AcquireWait.Seconds() }),
		counter("database_pool_exhausted_total", "Acquisitions that gave up after the pool timeout.", func(s store.PoolStats) float64 { return float64(s.ExhaustedErrs) }),
		counter("database_busy_waits_total", "SQLite writes that waited for the writer connection.", func(s store.PoolStats) float64 { return float64(s.BusyWaits) }),
	)
}

// RedisStats are the Redis client's pool figures and the failure counts of
// the limiter that uses it.
type RedisStats struct {
	TotalConns, IdleConns  int
	Hits, Misses, Timeouts int64 // connection acquisitions
	WaitDuration           time.Duration
	Errors, FailOpen       int64 // limiter calls that failed; decisions admitted because of REDIS_FAIL_OPEN
}

// CacheRequest counts one request that asked for the response cache;
// result is hit, miss or skip.
func (m *Metrics) CacheRequest(result string) {
	m.cacheResults.WithLabelValues(result).Inc()
}

// CacheStats are the response cache's figures; Entries and Bytes are known
// only for the in-process cache.
type CacheStats struct {
	Entries int
	Bytes   int64
	Errors  int64
}

// RegisterCache exports the response cache's figures, read from stats at
// scrape time: llm_cache_entries and llm_cache_bytes when inProcess, else
// llm_cache_errors_total (failed Redis calls, served as misses).
func (m *Metrics) RegisterCache(inProcess bool, stats func() CacheStats) {
	if inProcess {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llm_cache_entries", Help: "Entries in the in-process response cache."},
				func() float64 { return float64(stats().Entries) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llm_cache_bytes", Help: "Bytes charged to the in-process response cache (CACHE_MAX_BYTES bounds it)."},
				func() float64 { return float64(stats().Bytes) }),
		)
		return
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "llm_cache_errors_total", Help: "Response cache calls to Redis that failed (served as misses, writes dropped)."},
		func() float64 { return float64(stats().Errors) }))
}

// RegisterRedis exports Redis pool and failure figures as redis_* metrics,
// read from stats at scrape time.
func (m *Metrics) RegisterRedis(stats func() RedisStats) {
	gauge := func(name, help string, f func(RedisStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	counter := func(name, help string, f func(RedisStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	m.reg.MustRegister(
		gauge("redis_pool_connections_total", "Open Redis connections.", func(s RedisStats) float64 { return float64(s.TotalConns) }),
		gauge("redis_pool_connections_idle", "Idle Redis connections.", func(s RedisStats) float64 { return float64(s.IdleConns) }),
		counter("redis_pool_hits_total", "Acquisitions that found an idle connection.", func(s RedisStats) float64 { return float64(s.Hits) }),
		counter("redis_pool_misses_total", "Acquisitions that had to open a connection.", func(s RedisStats) float64 { return float64(s.Misses) }),
		counter("redis_pool_timeouts_total", "Acquisitions that timed out waiting for a connection.", func(s RedisStats) float64 { return float64(s.Timeouts) }),
		counter("redis_pool_wait_seconds_total", "Cumulative time spent waiting for a Redis connection.", func(s RedisStats) float64 { return s.WaitDuration.Seconds() }),
		counter("redis_errors_total", "Rate-limit and quota calls to Redis that failed (timeout, unreachable, breaker open).", func(s RedisStats) float64 { return float64(s.Errors) }),
		counter("redis_fail_open_total", "Requests admitted without a limit decision because Redis was away and REDIS_FAIL_OPEN is true.", func(s RedisStats) float64 { return float64(s.FailOpen) }),
	)
}

// QueueStats are the batch writer's figures.
type QueueStats struct {
	QueuedUsage, QueuedAudit                int
	DroppedUsage, DroppedAudit              int64
	WrittenUsage, WrittenAudit, FlushErrors int64
}

// RegisterQueue exports the usage/audit batch writer's queue depth, drops
// and writes, read from stats at scrape time.
func (m *Metrics) RegisterQueue(stats func() QueueStats) {
	kinds := []struct {
		kind             string
		queued           func(QueueStats) int
		dropped, written func(QueueStats) int64
	}{
		{"usage", func(s QueueStats) int { return s.QueuedUsage }, func(s QueueStats) int64 { return s.DroppedUsage }, func(s QueueStats) int64 { return s.WrittenUsage }},
		{"audit", func(s QueueStats) int { return s.QueuedAudit }, func(s QueueStats) int64 { return s.DroppedAudit }, func(s QueueStats) int64 { return s.WrittenAudit }},
	}
	for _, k := range kinds {
		labels := prometheus.Labels{"kind": k.kind}
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "batch_queue_depth", Help: "Rows waiting to be written.", ConstLabels: labels},
				func() float64 { return float64(k.queued(stats())) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "batch_dropped_rows_total", Help: "Rows dropped because the buffer was full.", ConstLabels: labels},
				func() float64 { return float64(k.dropped(stats())) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "batch_written_rows_total", Help: "Rows written to the database.", ConstLabels: labels},
				func() float64 { return float64(k.written(stats())) }),
		)
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "batch_flush_errors_total", Help: "Batch writes that failed and will be retried."},
		func() float64 { return float64(stats().FlushErrors) }))
}

// MemoryStats are the memory capture figures (package memory's Stats).
type MemoryStats struct {
	Queued                                          int
	Dropped, Written, WriteErrors, Injected, Errors int64
}

// RegisterMemory exports the memory capture queue and injections, read
// from stats at scrape time.
func (m *Metrics) RegisterMemory(stats func() MemoryStats) {
	counter := func(name, help string, f func(MemoryStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(stats())) })
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llm_memory_capture_queued", Help: "Sessions whose transcript waits to be written."},
			func() float64 { return float64(stats().Queued) }),
		counter("llm_memory_capture_dropped_total", "Transcripts dropped because the capture queue was full (the request was served).", func(s MemoryStats) int64 { return s.Dropped }),
		counter("llm_memory_capture_written_total", "Transcripts written.", func(s MemoryStats) int64 { return s.Written }),
		counter("llm_memory_capture_errors_total", "Transcripts that could not be written.", func(s MemoryStats) int64 { return s.WriteErrors }),
		counter("llm_memory_injected_total", "Requests that received summaries of earlier sessions.", func(s MemoryStats) int64 { return s.Injected }),
		counter("llm_memory_lookup_errors_total", "Session first requests served without memory after a database error.", func(s MemoryStats) int64 { return s.Errors }),
	)
}
