package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/httpapi"
	"github.com/llmproxy/llm-proxy/internal/invalidate"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// pgNotifyChannel carries invalidations over PostgreSQL LISTEN/NOTIFY when
// there is no Redis.
const pgNotifyChannel = "llmproxy_invalidate"

// shared is what replicas coordinate through (SPEC §7): the rate limiter,
// the max_requests counter and the cache-invalidation bus, picked from the
// configuration:
//
//	SQLite                 in-process limiter and counter, local invalidation
//	PostgreSQL, no Redis   per-replica limiter, counter in the database, LISTEN/NOTIFY
//	PostgreSQL + Redis     Redis limiter and counter, Redis pub/sub
type shared struct {
	limiter ratelimit.Limiter
	quota   httpapi.QuotaCounter
	bus     *invalidate.Bus
	checks  []httpapi.ReadyCheck
	redis   *redis.Client    // nil without REDIS_URL
	breaker *breaker.Breaker // Redis's circuit breaker; nil without REDIS_URL
	// flush, when set, writes the limiter's deferred adjustments in the
	// background until its context ends.
	flush func(context.Context) error
}

func newShared(ctx context.Context, cfg *config.Config, st store.Store, authn *auth.Authenticator, metrics *telemetry.Metrics,
	recorder *usage.Recorder, tp trace.TracerProvider, logger *slog.Logger) (*shared, error) {
	if cfg.RedisURL == "" {
		sh := &shared{limiter: ratelimit.NewMemory()}
		if pg, ok := st.(*postgres.DB); ok {
			logger.Warn("REDIS_URL is not set with PostgreSQL: rate limits are per replica; " +
				"max_requests is counted in the database and invalidations travel over LISTEN/NOTIFY")
			sh.quota = quota.NewDB(st)
			sh.bus = invalidate.NewPostgres(pg.Pool(), pgNotifyChannel, authn, logger)
		} else {
			sh.quota = quota.NewMemory(recorder)
			sh.bus = invalidate.NewLocal(authn)
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
	// Concurrent requests' decisions share pipelines; closing the client
	// stops the autopipeliner.
	batched, err := ratelimit.NewPipeliner(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis autopipeline: %w", err)
	}
	limiter := ratelimit.NewRedis(client, ratelimit.RedisOptions{
		Prefix: cfg.RedisKeyPrefix, Timeout: cfg.RedisTimeout, FailOpen: cfg.RedisFailOpen, Breaker: brk,
		Scripter: batched, DirectDecisions: directDecisions, Logger: logger,
	})
	metrics.RegisterRedis(func() telemetry.RedisStats {
		p, l := client.PoolStats(), limiter.Stats()
		s := telemetry.RedisStats{
			TotalConns: int(p.TotalConns), IdleConns: int(p.IdleConns),
			Hits: int64(p.Hits), Misses: int64(p.Misses), Timeouts: int64(p.Timeouts), WaitDuration: time.Duration(p.WaitDurationNs),
			Errors: l.Errors, FailOpen: l.FailOpen,
		}
		// The autopipeliner's batches run on the client's separate
		// pipeline pool; the figures cover both pools.
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
		limiter: limiter,
		quota:   quota.NewRedis(quota.RedisOptions{Limiter: limiter, Store: st, Toucher: recorder, Logger: logger}),
		bus:     invalidate.NewRedis(client, cfg.RedisKeyPrefix+"invalidate", authn, logger),
		redis:   client,
		breaker: brk,
		flush:   limiter.Run,
	}
	sh.checks = []httpapi.ReadyCheck{{Name: "redis", Check: func(ctx context.Context) (string, bool) {
		ctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
		defer cancel()
		if err := client.Ping(ctx).Err(); err != nil {
			if cfg.RedisFailOpen {
				return "unreachable (fail-open: limits not enforced)", true
			}
			return "unreachable (fail-closed: rate-limited requests refused)", false
		}
		return "ok", true
	}}}
	return sh, nil
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

// directDecisions is how many concurrent rate-limit decisions go to Redis
// on their own before they share the autopipeliner's batches.
const directDecisions = 4

// close releases the Redis client.
func (sh *shared) close() error {
	if sh.redis == nil {
		return nil
	}
	return sh.redis.Close()
}
