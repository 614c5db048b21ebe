package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/google/uuid"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/httpapi"
	"github.com/llmproxy/llm-proxy/internal/invalidate"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// pgNotifyChannel carries invalidations over PostgreSQL LISTEN/NOTIFY when
// there is no Redis.
const pgNotifyChannel = "llmproxy_invalidate"

// shared is what replicas coordinate through (SPEC §7): the admission
// (rate limits and the max_requests counter) and the cache-invalidation
// bus, picked from the configuration:
//
//	SQLite                 Split: in-process limiter and counter; local invalidation
//	PostgreSQL, no Redis   Split: per-replica limiter, counter in the database; LISTEN/NOTIFY
//	PostgreSQL + Redis     Combined: limiter and counter in one Redis script; Redis pub/sub
//
// and the readiness checks of what they share besides the database itself
// (which /readyz pings on its own): the schema and Redis.
type shared struct {
	admission httpapi.Admission
	limiter   ratelimit.Limiter // the admission's; the device login counts its starts on it too
	bus       *invalidate.Bus
	checks    []httpapi.ReadyCheck
	probe     *schema.Probe
	redis     *redis.Client    // nil without REDIS_URL
	breaker   *breaker.Breaker // Redis's circuit breaker; nil without REDIS_URL
	// flush, when set, writes the limiter's deferred adjustments in the
	// background until its context ends.
	flush func(context.Context) error
	// closeQuota, when set, gives the max_requests counter's unserved
	// reservations back to the database; called once the HTTP server has
	// drained, before the store closes.
	closeQuota func(context.Context) error
}

// schemaProbeInterval is how often readiness re-reads the schema version:
// probes every few seconds cost one query per interval, and a schema rolled
// back or left dirty under a running replica takes it out of service within
// about this long. Tests shorten it before any proxy starts.
var schemaProbeInterval = 10 * time.Second

func newShared(ctx context.Context, cfg *config.Config, st store.Store, caches invalidate.Target, metrics *telemetry.Metrics,
	recorder *usage.Recorder, tp trace.TracerProvider, logger *slog.Logger) (_ *shared, err error) {
	schemaDSN := cfg.Database.URL
	if s, ok := st.(*sqlite.DB); ok {
		schemaDSN = s.SchemaDSN()
	}
	probe, err := schema.NewProbe(cfg.Database.Driver, schemaDSN, schemaProbeInterval)
	if err != nil {
		return nil, fmt.Errorf("schema readiness probe: %w", err)
	}
	defer func() {
		if err != nil {
			_ = probe.Close()
		}
	}()
	if cfg.RedisURL == "" {
		lim := ratelimit.NewMemory()
		sh := &shared{limiter: lim, probe: probe, checks: []httpapi.ReadyCheck{schemaCheck(probe)}}
		if pg, ok := st.(*postgres.DB); ok {
			logger.Warn("REDIS_URL is not set with PostgreSQL: rate limits are per replica; " +
				"max_requests is counted in the database and invalidations travel over LISTEN/NOTIFY")
			sh.admission = admission.NewSplit(lim, quota.NewDB(st, recorder), logger)
			sh.bus = invalidate.NewPostgres(pg.Pool(), pgNotifyChannel, caches, logger)
		} else {
			mem := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: recorder})
			sh.admission, sh.closeQuota = admission.NewSplit(lim, mem, logger), mem.Close
			sh.bus = invalidate.NewLocal(caches)
		}
		return sh, nil
	}

	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opts.PoolSize = cfg.RedisPoolSize
	opts.DialTimeout = cfg.RedisDialTimeout
	opts.ReadTimeout = cfg.RedisTimeout
	opts.WriteTimeout = cfg.RedisTimeout
	opts.ContextTimeoutEnabled = true
	// Fail fast rather than retry: the failure policy decides what a
	// request gets while Redis is away.
	opts.MaxRetries = -1
	client := redis.NewClient(opts)
	if tp != nil {
		// Commands without their arguments: keys and values stay out of traces.
		if err := redisotel.InstrumentTracing(client, redisotel.WithTracerProvider(tp), redisotel.WithDBStatement(false)); err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("trace redis: %w", err)
		}
	}
	pingCtx, cancel := context.WithTimeout(ctx, cfg.RedisDialTimeout)
	if err := client.Ping(pingCtx).Err(); err != nil {
		logger.Warn("Redis is unreachable at start-up; serving with REDIS_FAIL_OPEN policy until it returns",
			"redis", config.MaskURL(cfg.RedisURL), "fail_open", cfg.RedisFailOpen, "err", err)
	}
	cancel()

	brk := breaker.New(breaker.Options{IsFailure: redisDown, OnStateChange: func(open bool) {
		if open {
			logger.Warn("Redis circuit breaker open: Redis calls fail fast", "fail_open", cfg.RedisFailOpen)
		} else {
			logger.Info("Redis circuit breaker closed: Redis is back")
		}
	}})
	limiter := ratelimit.NewRedis(client, ratelimit.RedisOptions{
		Prefix: cfg.RedisKeyPrefix, Timeout: cfg.RedisTimeout, FailOpen: cfg.RedisFailOpen, Breaker: brk,
		Logger: logger,
	})
	metrics.RegisterRedis(func() telemetry.RedisStats {
		p, l := client.PoolStats(), limiter.Stats()
		s := telemetry.RedisStats{
			TotalConns: int(p.TotalConns), IdleConns: int(p.IdleConns),
			Hits: int64(p.Hits), Misses: int64(p.Misses), Timeouts: int64(p.Timeouts), WaitDuration: time.Duration(p.WaitDurationNs),
			Errors: l.Errors, FailOpen: l.FailOpen,
		}
		// Pipelines (the limiter's adjustment flushes) run on the
		// client's separate pipeline pool; the figures cover both pools.
		if pp := p.PipelineStats; pp != nil {
			s.TotalConns += int(pp.TotalConns)
			s.IdleConns += int(pp.IdleConns)
			s.Hits += int64(pp.Hits)
			s.Misses += int64(pp.Misses)
			s.Timeouts += int64(pp.Timeouts)
			s.WaitDuration += time.Duration(pp.WaitDurationNs)
		}
		return s
	})
	sh := &shared{
		admission: admission.NewCombined(limiter,
			quota.NewRedis(quota.RedisOptions{Limiter: limiter, Store: st, Toucher: recorder, Logger: logger}), logger),
		limiter: limiter,
		bus:     invalidate.NewRedis(client, cfg.RedisKeyPrefix+"invalidate", caches, logger),
		probe:   probe,
		redis:   client,
		breaker: brk,
		flush:   limiter.Run,
	}
	// Redis away is degraded, never unready, whatever REDIS_FAIL_OPEN says:
	// every replica shares the one Redis, so 503s would pull them all out
	// of the Service at once. Fail-open keeps serving without limits;
	// fail-closed refuses limited requests with 503 itself, and the
	// replicas stay in rotation to serve the rest and to resume the moment
	// Redis returns. The body, llm_dependency_up and the log say which.
	sh.checks = []httpapi.ReadyCheck{schemaCheck(probe), {Name: "redis", Check: func(ctx context.Context) (string, httpapi.Readiness) {
		ctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
		defer cancel()
		if err := client.Ping(ctx).Err(); err != nil {
			if cfg.RedisFailOpen {
				return "unreachable (fail-open: limits not enforced)", httpapi.Degraded
			}
			return "unreachable (fail-closed: rate-limited requests refused)", httpapi.Degraded
		}
		return "ok", httpapi.Ready
	}}}
	return sh, nil
}

// schemaCheck reports the schema version read through probe. A schema
// behind this build or dirty (someone ran `migrate down`, or a migration
// failed half way) is a reason local to this build: unready, 503. A schema
// that cannot be read is "unknown" and degraded — the database check says
// why, and an unreachable database is no reason to leave the Service. A
// newer schema is served, as at start-up (migrations are additive).
func schemaCheck(probe *schema.Probe) httpapi.ReadyCheck {
	return httpapi.ReadyCheck{Name: "schema", Check: func(ctx context.Context) (string, httpapi.Readiness) {
		st, err := probe.Status(ctx)
		switch {
		case err != nil:
			return "unknown", httpapi.Degraded
		case st.Dirty:
			return fmt.Sprintf("dirty at version %d (see `migrate force`)", st.Current), httpapi.Unready
		case st.None:
			return fmt.Sprintf("behind: no migration applied, this build needs version %d", st.Latest), httpapi.Unready
		case st.Current < st.Latest:
			return fmt.Sprintf("behind: version %d, this build needs version %d", st.Current, st.Latest), httpapi.Unready
		case st.Current > st.Latest:
			return fmt.Sprintf("ok (version %d, newer than this build's %d)", st.Current, st.Latest), httpapi.Ready
		}
		return "ok", httpapi.Ready
	}}
}

// schemaVersion describes the schema for the console's cluster page.
func (sh *shared) schemaVersion(ctx context.Context) (string, error) {
	st, err := sh.probe.Status(ctx)
	if err != nil {
		return "", err
	}
	v := fmt.Sprintf("%d (this build: %d)", st.Current, st.Latest)
	if st.Dirty {
		v += ", dirty"
	}
	return v, nil
}

// redisDown tells the breaker which errors mean Redis is away (refused,
// reset, closed connections). Timeouts do not count: they may be this
// replica's own overload (a saturated CPU, a full pool) rather than Redis,
// and each is already bounded by REDIS_TIMEOUT.
func redisDown(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout):
		return false
	case errors.As(err, &ne) && ne.Timeout():
		return false
	}
	return true
}

// close releases the schema probe and the Redis client.
func (sh *shared) close() error {
	err := sh.probe.Close()
	if sh.redis != nil {
		err = errors.Join(err, sh.redis.Close())
	}
	return err
}

// responseCache picks the response cache: Redis when the deployment has one
// (entries shared by the replicas), else the in-process LRU of
// CACHE_MAX_BYTES; nil (no cache) when that is 0.
func responseCache(cfg *config.Config, sh *shared, metrics *telemetry.Metrics, logger *slog.Logger) cache.Cache {
	if sh.redis != nil {
		c := cache.NewRedis(sh.redis, cache.RedisOptions{Prefix: cfg.RedisKeyPrefix + "cache:", Timeout: cfg.RedisTimeout,
			Breaker: sh.breaker, Logger: logger})
		metrics.RegisterCache(false, func() telemetry.CacheStats { return telemetry.CacheStats{Errors: c.Errors()} })
		return c
	}
	if cfg.CacheMaxBytes == 0 {
		return nil
	}
	c := cache.NewMemory(cache.MemoryOptions{MaxBytes: cfg.CacheMaxBytes})
	metrics.RegisterCache(true, func() telemetry.CacheStats {
		s := c.Stats()
		return telemetry.CacheStats{Entries: s.Entries, Bytes: s.Bytes}
	})
	return c
}

// thisReplica is this process's row in the replicas table: a random ID per
// start, the host name, and the main module's version as the go command
// stamped it (a tag or a VCS pseudo-version; "" for a build without one).
func thisReplica() store.Replica {
	host, _ := os.Hostname()
	var version string
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	return store.Replica{ID: uuid.NewString(), Hostname: host, Version: version, StartedAt: time.Now()}
}
