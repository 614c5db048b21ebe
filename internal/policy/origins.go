package policy

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// OriginLister lists the allowed origins of the active projects
// (store.Store satisfies it).
type OriginLister interface {
	ListAllowedOrigins(ctx context.Context) ([]string, error)
}

var _ OriginLister = store.Store(nil)

// Origins answers CORS preflights (SPEC §6.7): whether any active project
// allows a browser origin. It keeps the union of the active projects'
// allowed origins in memory, so a preflight costs a map lookup; the union
// (one query, however many projects there are) is reloaded when it is
// older than the TTL or was invalidated (it satisfies invalidate.Target,
// driven by the same channel as the token cache). When a reload fails, the previous union keeps answering. It is
// safe for concurrent use and starts no goroutines.
type Origins struct {
	st     OriginLister
	ttl    time.Duration
	now    func() time.Time
	logger *slog.Logger

	snap  atomic.Pointer[originSet]
	stale atomic.Bool
	load  sync.Mutex // one reload at a time; the others wait for it
}

type originSet struct {
	any      bool // some active project allows "*"
	origins  map[string]struct{}
	loadedAt time.Time
}

// OriginsOptions tune Origins. Zero values take the defaults.
type OriginsOptions struct {
	// TTL bounds how long a union is used without reloading (default 5s).
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives reload failures (default: discard).
	Logger *slog.Logger
}

// NewOrigins returns an Origins over st.
func NewOrigins(st OriginLister, opts OriginsOptions) *Origins {
	if opts.TTL <= 0 {
		opts.TTL = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Origins{st: st, ttl: opts.TTL, now: opts.Now, logger: opts.Logger}
}

// Allowed reports whether some active project allows origin.
func (o *Origins) Allowed(ctx context.Context, origin string) bool {
	s := o.current(ctx)
	if s == nil || origin == "" || origin == "null" {
		return false
	}
	if s.any {
		return true
	}
	_, ok := s.origins[origin]
	return ok
}

// current returns a fresh union, reloading it when needed; nil when none
// could ever be loaded.
func (o *Origins) current(ctx context.Context) *originSet {
	s := o.snap.Load()
	if s != nil && !o.stale.Load() && o.now().Sub(s.loadedAt) < o.ttl {
		return s
	}
	o.load.Lock()
	defer o.load.Unlock()
	s = o.snap.Load()
	if s != nil && !o.stale.Load() && o.now().Sub(s.loadedAt) < o.ttl {
		return s // reloaded while this caller waited
	}
	// Cleared before the load: an invalidation during it marks the new
	// union stale again.
	o.stale.Store(false)
	fresh, err := o.fetch(ctx)
	if err != nil {
		o.stale.Store(true)
		o.logger.WarnContext(ctx, "reload allowed origins; using the previous list", "err", err)
		return s
	}
	o.snap.Store(fresh)
	return fresh
}

func (o *Origins) fetch(ctx context.Context) (*originSet, error) {
	loadedAt := o.now()
	origins, err := o.st.ListAllowedOrigins(ctx)
	if err != nil {
		return nil, err
	}
	s := &originSet{origins: make(map[string]struct{}, len(origins)), loadedAt: loadedAt}
	for _, origin := range origins {
		if origin == "*" {
			s.any = true
		}
		s.origins[origin] = struct{}{}
	}
	return s, nil
}

// InvalidateToken does nothing: tokens carry no origins.
func (o *Origins) InvalidateToken(string) {}

// InvalidateProject makes the next preflight reload the union.
func (o *Origins) InvalidateProject(string) { o.stale.Store(true) }

// Flush makes the next preflight reload the union.
func (o *Origins) Flush() { o.stale.Store(true) }

// OriginAllowed reports whether a project's allowed origins admit origin
// (an exact match, or "*").
func OriginAllowed(allowed []string, origin string) bool {
	if origin == "" || origin == "null" {
		return false
	}
	return slices.Contains(allowed, origin) || slices.Contains(allowed, "*")
}
