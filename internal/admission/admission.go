// Package admission decides whether an authenticated request may go
// upstream: the per-minute rate limits of its token and project
// (requests/min, tokens/min) and its token's max_requests quota, all or
// nothing (SPEC §6.1). A request refused by one of them spends none of the
// others.
//
// Two implementations exist; cmd/proxy picks one:
//
//	Split     a ratelimit.Limiter, then a quota.Counter (in process or in the
//	          database): a quota refusal gives the rate limits back.
//	Combined  quota.Redis decides both in one Redis script: one round trip,
//	          nothing to give back.
//
// Both report a refusal the same way: an error that is a *LimitedError
// (a rate limit, with the wait) or wraps store.ErrQuotaExceeded (the quota is
// spent for good); any other error means the decision could not be made
// (Redis or the database away while failing closed), and wraps
// ratelimit.ErrUnavailable when the rate limiter was the cause.
package admission

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// LimitedError is the refusal of a request by a rate limit. It wraps
// ratelimit.ErrLimited.
type LimitedError struct {
	// Limit names the budget that refused, without IDs: "token requests
	// per minute", "project tokens per minute"...
	Limit string
	// RetryAfter is how long until the request would fit (> 0).
	RetryAfter time.Duration
}

func (e *LimitedError) Error() string { return "rate limit exceeded (" + e.Limit + ")" }

func (e *LimitedError) Unwrap() error { return ratelimit.ErrLimited }

// Limits lists the per-minute budgets a request spends: requests and
// tokens, per token and per project; a limit of 0 is no budget. estimate is
// the request's token cost (prompt + max_tokens, at least 1), settled by
// Reconcile once the response tells the real count.
func Limits(t *store.Token, p *store.Project, estimate int64) []ratelimit.Request {
	estimate = max(estimate, 1)
	var reqs []ratelimit.Request
	add := func(key string, limit int, cost int64) {
		if limit > 0 {
			reqs = append(reqs, ratelimit.Request{Key: key, Limit: int64(limit), Cost: cost})
		}
	}
	add("tok:"+t.ID+":rpm", t.RPMLimit, 1)
	add("prj:"+p.ID+":rpm", p.RPMLimit, 1)
	add("tok:"+t.ID+tpmSuffix, t.TPMLimit, estimate)
	add("prj:"+p.ID+tpmSuffix, p.TPMLimit, estimate)
	return reqs
}

// tpmSuffix ends the keys of tokens-per-minute budgets, the ones Reconcile
// settles.
const tpmSuffix = ":tpm"

// limited turns a refused decision into its error.
func limited(d ratelimit.Decision) *LimitedError {
	scope, kind := "token", d.Key[strings.LastIndexByte(d.Key, ':')+1:]
	if strings.HasPrefix(d.Key, "prj:") {
		scope = "project"
	}
	name := scope + " requests per minute"
	if kind == "tpm" {
		name = scope + " tokens per minute"
	}
	return &LimitedError{Limit: name, RetryAfter: d.RetryAfter}
}

// reconcile replaces the tokens/min estimates of limits with the real
// count, for a client that went away too (hence WithoutCancel). Both
// limiters adjust without waiting on the network (Redis defers the write).
func reconcile(ctx context.Context, lim ratelimit.Limiter, logger *slog.Logger, limits []ratelimit.Request, actual int64) {
	ctx = context.WithoutCancel(ctx)
	for _, r := range limits {
		if !strings.HasSuffix(r.Key, tpmSuffix) {
			continue
		}
		if delta := actual - r.Cost; delta != 0 {
			if err := lim.Adjust(ctx, r.Key, r.Limit, delta); err != nil {
				logger.WarnContext(ctx, "reconcile tokens per minute", "err", err)
			}
		}
	}
}

// Split admits with a rate limiter and then a quota counter. It is the
// admission without Redis (the in-process limiter with quota.Memory on
// SQLite or quota.DB on PostgreSQL), and is safe for concurrent use.
type Split struct {
	limiter ratelimit.Limiter
	counter quota.Counter
	logger  *slog.Logger
}

// NewSplit returns a Split on limiter and counter; logger (nil discards)
// receives failures to give rate limits back.
func NewSplit(limiter ratelimit.Limiter, counter quota.Counter, logger *slog.Logger) *Split {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Split{limiter: limiter, counter: counter, logger: logger}
}

// Admit spends limits, then counts the request against t's quota (every
// counter also counts requests of tokens without one); when the counter
// refuses or cannot decide, the limits are given back.
func (s *Split) Admit(ctx context.Context, t *store.Token, limits []ratelimit.Request) error {
	d, err := s.limiter.Allow(ctx, limits...)
	if err != nil {
		return fmt.Errorf("admit: %w", err)
	}
	if !d.Allowed {
		return limited(d)
	}
	if err := s.counter.Consume(ctx, t); err != nil {
		s.refund(limits)
		return fmt.Errorf("admit: %w", err)
	}
	return nil
}

// refund gives back what Admit spent, under its own timeout: the request
// may have been refused because its context ended.
func (s *Split) refund(limits []ratelimit.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, r := range limits {
		if err := s.limiter.Adjust(ctx, r.Key, r.Limit, -r.Cost); err != nil {
			s.logger.Warn("refund rate limit", "err", err)
		}
	}
}

// Reconcile settles the tokens/min estimates of an admitted request's
// limits with the actual token count.
func (s *Split) Reconcile(ctx context.Context, limits []ratelimit.Request, actual int64) {
	reconcile(ctx, s.limiter, s.logger, limits, actual)
}

// Combined admits with one atomic Redis script over the rate limits and
// the quota counter (quota.Redis). It is the admission with Redis, and is
// safe for concurrent use.
type Combined struct {
	limiter *ratelimit.Redis
	counter *quota.Redis
	logger  *slog.Logger
}

// NewCombined returns a Combined; counter must run its script on limiter
// (quota.RedisOptions.Limiter). logger (nil discards) receives failures to
// reconcile.
func NewCombined(limiter *ratelimit.Redis, counter *quota.Redis, logger *slog.Logger) *Combined {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Combined{limiter: limiter, counter: counter, logger: logger}
}

// Admit decides limits and t's quota in one script.
func (c *Combined) Admit(ctx context.Context, t *store.Token, limits []ratelimit.Request) error {
	d, err := c.counter.ConsumeWith(ctx, t, limits...)
	if err != nil {
		return fmt.Errorf("admit: %w", err)
	}
	if !d.Allowed {
		return limited(d)
	}
	return nil
}

// Reconcile settles the tokens/min estimates of an admitted request's
// limits with the actual token count.
func (c *Combined) Reconcile(ctx context.Context, limits []ratelimit.Request, actual int64) {
	reconcile(ctx, c.limiter, c.logger, limits, actual)
}
