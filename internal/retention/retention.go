// Package retention deletes rows that have outlived their retention period
// (SPEC §4): old usage and audit rows, long-expired tokens and agent
// tokens, ended failed-authentication blocks, expired device-login state
// (pending authorizations, browser sign-ins), old session summaries and
// transcripts of memory (SPEC §6.6), and the rows of replicas that stopped
// without deleting their own (a crash). Sweeps run on one replica at a time,
// under the store's "retention" lock (the leader job).
//
// Usage and audit events are kept in whole UTC days: a sweep removes the
// days that ended before now minus the retention period. On PostgreSQL,
// where those tables are partitioned by day, the sweep first creates the
// partitions of the coming days, then drops whole partitions; everywhere
// else (SQLite, rows that landed in a default partition, and the other
// kinds) it deletes in bounded batches with a pause between them, so the
// tables are never locked for long and the request path keeps its share of
// the database. Either way the usage roll-up loses the same rows in the
// same transaction.
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// LockName is the cluster-wide lock a sweep holds.
const LockName = "retention"

// Defaults applied by New to zero Options fields.
const (
	DefaultInterval  = time.Hour
	DefaultBatchSize = 1000
	DefaultPause     = 50 * time.Millisecond
	// DefaultPartitionsAhead is how many days after today get their
	// partitions created in advance.
	DefaultPartitionsAhead = 7
)

// maxStartJitter caps the random delay before the first sweep.
const maxStartJitter = time.Minute

// Options configure a Sweeper. A zero (or negative) retention period keeps
// those rows forever.
type Options struct {
	Usage  time.Duration // keep usage rows this long after they were created
	Audit  time.Duration // keep audit events this long after they were created
	Tokens time.Duration // keep tokens this long after they expired
	// Memory keeps session summaries this long after they were written,
	// and transcripts this long after their session's last activity
	// (MEMORY_RETENTION_DAYS).
	Memory time.Duration
	// Interval is the time between sweeps (DefaultInterval when zero).
	Interval time.Duration
	// BatchSize bounds the rows one DELETE removes (DefaultBatchSize when
	// zero).
	BatchSize int
	// Pause is the wait between batches (DefaultPause when zero).
	Pause time.Duration
	// PartitionsAhead is how many days after today get their partitions
	// created in advance (DefaultPartitionsAhead when zero).
	PartitionsAhead int
	// Logger nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Result counts the rows one sweep deleted (dropped partitions count their
// rows) and the partitions it created.
type Result struct {
	Usage, Audit, Tokens, AuthBlocks                int64
	AgentTokens, PendingAuthorizations, SSOSessions int64
	Summaries, MemorySessions                       int64
	Replicas                                        int64
	PartitionsCreated                               int
}

// authBlockKeep is how long a failed-authentication block is kept after it
// ended. Blocks are state, not history (the audit trail has the attempts),
// so they are swept whatever the retention settings.
const authBlockKeep = 24 * time.Hour

// loginStateKeep is how long expired device-login state (pending
// authorizations, browser sign-ins) is kept: it is state too, useless once
// expired, kept a little so a late poll still gets expired_token.
const loginStateKeep = time.Hour

// replicaKeep is how long a replica's row is kept after its last
// heartbeat. A clean shutdown deletes the row at once; this catches those
// of crashed processes, which the console shows as gone meanwhile.
const replicaKeep = 24 * time.Hour

// Store is the part of store.Store a Sweeper uses; store.Store satisfies
// it.
type Store interface {
	TryLock(ctx context.Context, name string) (release func(), ok bool, err error)
	EnsurePartitions(ctx context.Context, from, to time.Time) (int, error)
	DropUsagePartitionsBefore(ctx context.Context, t time.Time) (int64, error)
	DropAuditPartitionsBefore(ctx context.Context, t time.Time) (int64, error)
	DeleteUsageBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteAuditBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteAuthBlocksBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteAgentTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeletePendingAuthorizationsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteSSOSessionsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteSummariesBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteMemorySessionsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteReplicasSeenBefore(ctx context.Context, t time.Time, limit int) (int64, error)
}

var _ Store = store.Store(nil)

// Sweeper runs retention sweeps. Its methods are safe for concurrent use.
type Sweeper struct {
	store Store
	opts  Options
}

// New returns a Sweeper over st with opts, defaults applied.
func New(st Store, opts Options) *Sweeper {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.Pause <= 0 {
		opts.Pause = DefaultPause
	}
	if opts.PartitionsAhead <= 0 {
		opts.PartitionsAhead = DefaultPartitionsAhead
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Sweeper{store: st, opts: opts}
}

// Run sweeps every Interval, the first time after a random delay of up to a
// tenth of Interval (at most a minute) so replicas started together do not
// all try at once. Only the replica holding the lock sweeps; the others
// skip that round. Errors are logged and the next round retries. Run
// returns nil when ctx ends, abandoning a sweep in progress between two
// batches.
func (s *Sweeper) Run(ctx context.Context) error {
	jitter := min(s.opts.Interval/10, maxStartJitter)
	timer := time.NewTimer(rand.N(jitter + 1))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		start := time.Now()
		res, ran, err := s.SweepOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			s.opts.Logger.Error("retention sweep", "error", err, "usage_deleted", res.Usage, "audit_deleted", res.Audit,
				"tokens_deleted", res.Tokens, "auth_blocks_deleted", res.AuthBlocks, "agent_tokens_deleted", res.AgentTokens,
				"pending_authorizations_deleted", res.PendingAuthorizations, "sso_sessions_deleted", res.SSOSessions,
				"summaries_deleted", res.Summaries, "memory_sessions_deleted", res.MemorySessions,
				"replicas_deleted", res.Replicas, "partitions_created", res.PartitionsCreated)
		case !ran:
			s.opts.Logger.Debug("retention sweep skipped: another replica holds the lock")
		default:
			s.opts.Logger.Info("retention sweep done", "usage_deleted", res.Usage, "audit_deleted", res.Audit,
				"tokens_deleted", res.Tokens, "auth_blocks_deleted", res.AuthBlocks, "agent_tokens_deleted", res.AgentTokens,
				"pending_authorizations_deleted", res.PendingAuthorizations, "sso_sessions_deleted", res.SSOSessions,
				"summaries_deleted", res.Summaries, "memory_sessions_deleted", res.MemorySessions,
				"replicas_deleted", res.Replicas, "partitions_created", res.PartitionsCreated, "duration_ms", time.Since(start).Milliseconds())
		}
		timer.Reset(s.opts.Interval)
	}
}

// SweepOnce takes the lock, creates the partitions of today and the next
// PartitionsAhead days, and then removes, in batches until none are left:
// usage rows (with their roll-up) and audit events of the UTC days that
// ended before now minus Usage and Audit, tokens and agent tokens that
// expired more than Tokens ago, session summaries and transcripts older
// than Memory (a zero period skips that kind), failed-authentication blocks
// that ended more than a day ago, pending authorizations and browser
// sign-ins expired over an hour ago, and replicas not seen for a day. It returns ran=false, doing nothing,
// when another holder has the lock. On an error it stops and returns what
// it did so far.
func (s *Sweeper) SweepOnce(ctx context.Context) (Result, bool, error) {
	release, ok, err := s.store.TryLock(ctx, LockName)
	if err != nil {
		return Result{}, false, fmt.Errorf("take retention lock: %w", err)
	}
	if !ok {
		return Result{}, false, nil
	}
	defer release()

	now := s.opts.Now()
	var res Result
	today := now.UTC().Truncate(day)
	res.PartitionsCreated, err = s.store.EnsurePartitions(ctx, today, today.Add(time.Duration(s.opts.PartitionsAhead+1)*day))
	if err != nil {
		return res, true, fmt.Errorf("create partitions: %w", err)
	}
	kinds := []struct {
		what   string
		keep   time.Duration
		days   bool // the cutoff is rounded down to a UTC day
		drop   func(context.Context, time.Time) (int64, error)
		delete func(context.Context, time.Time, int) (int64, error)
		count  *int64
	}{
		{"usage", s.opts.Usage, true, s.store.DropUsagePartitionsBefore, s.store.DeleteUsageBefore, &res.Usage},
		{"audit events", s.opts.Audit, true, s.store.DropAuditPartitionsBefore, s.store.DeleteAuditBefore, &res.Audit},
		{"expired tokens", s.opts.Tokens, false, nil, s.store.DeleteTokensExpiredBefore, &res.Tokens},
		{"ended auth blocks", authBlockKeep, false, nil, s.store.DeleteAuthBlocksBefore, &res.AuthBlocks},
		{"expired agent tokens", s.opts.Tokens, false, nil, s.store.DeleteAgentTokensExpiredBefore, &res.AgentTokens},
		{"expired pending authorizations", loginStateKeep, false, nil, s.store.DeletePendingAuthorizationsExpiredBefore, &res.PendingAuthorizations},
		{"expired sso sessions", loginStateKeep, false, nil, s.store.DeleteSSOSessionsExpiredBefore, &res.SSOSessions},
		{"session summaries", s.opts.Memory, false, nil, s.store.DeleteSummariesBefore, &res.Summaries},
		{"memory transcripts", s.opts.Memory, false, nil, s.store.DeleteMemorySessionsBefore, &res.MemorySessions},
		{"stale replicas", replicaKeep, false, nil, s.store.DeleteReplicasSeenBefore, &res.Replicas},
	}
	for _, k := range kinds {
		if k.keep <= 0 {
			continue
		}
		cutoff := now.Add(-k.keep)
		if k.days {
			cutoff = cutoff.UTC().Truncate(day)
		}
		if k.drop != nil {
			n, err := k.drop(ctx, cutoff)
			*k.count += n
			if err != nil {
				return res, true, fmt.Errorf("sweep %s: %w", k.what, err)
			}
		}
		if err := s.sweep(ctx, cutoff, k.delete, k.count); err != nil {
			return res, true, fmt.Errorf("sweep %s: %w", k.what, err)
		}
	}
	return res, true, nil
}

// day is a UTC day; retention of usage and audit events works in whole
// days, the unit of their partitions.
const day = 24 * time.Hour

// sweep deletes batches older than cutoff until a batch comes back short,
// adding the deleted rows to count.
func (s *Sweeper) sweep(ctx context.Context, cutoff time.Time,
	del func(context.Context, time.Time, int) (int64, error), count *int64) error {
	for {
		n, err := del(ctx, cutoff, s.opts.BatchSize)
		*count += n
		if err != nil {
			return err
		}
		if n < int64(s.opts.BatchSize) {
			return nil
		}
		if err := sleep(ctx, s.opts.Pause); err != nil {
			return err
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
