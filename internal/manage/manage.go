// Package manage is the business logic of the management surface (SPEC §6.2)
// shared by the HTTP API (internal/httpapi) and the bootstrap CLI
// (cmd/proxy): validation of project and token changes, encryption of
// upstream keys, cache invalidation, and usage and audit queries.
//
// Callers write the audit event of each call themselves (Service.Audit),
// because they know the request: who asked, from where, and whether the
// request even reached the Service.
package manage

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Invalidator drops cached authentication data at once, so a revocation or
// deactivation takes effect on the next request. *auth.Authenticator
// satisfies it. InvalidateProject must also drop every cached token of the
// project.
type Invalidator interface {
	InvalidateToken(id string)
	InvalidateProject(id string)
}

// Auditor accepts audit events; it must not block. *usage.Recorder
// satisfies it.
type Auditor interface {
	Audit(store.AuditEvent)
}

// Options configure a Service. Store and Cipher are required.
type Options struct {
	Store  store.Store
	Cipher *secret.Cipher
	// Invalidator is told about every token or project change; nil means
	// there is no cache to invalidate (the CLI).
	Invalidator Invalidator
	// Auditor receives the events passed to Service.Audit; nil drops them.
	Auditor Auditor
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service implements the management operations. It is safe for concurrent
// use.
type Service struct {
	store  store.Store
	cipher *secret.Cipher
	inval  Invalidator
	audit  Auditor
	now    func() time.Time
	logger *slog.Logger
}

// New returns a Service for o.
func New(o Options) *Service {
	s := &Service{store: o.Store, cipher: o.Cipher, inval: o.Invalidator, audit: o.Auditor, now: o.Now, logger: o.Logger}
	if s.inval == nil {
		s.inval = noInvalidator{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	return s
}

type noInvalidator struct{}

func (noInvalidator) InvalidateToken(string)   {}
func (noInvalidator) InvalidateProject(string) {}

// ValidationError is a rejected input value. Field is the JSON name of the
// offending field (the HTTP API reports it as the error's param; the CLI
// swaps in its flag name); Message says what is wrong, without the value.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Audit hands ev to the Auditor after filling in its ID and, when zero, its
// time. A ProjectID or TokenID that is not a UUID (a caller's typo in a
// path) is cleared, as the database could not store it; the path still
// shows it. It never blocks on the database when the Auditor is batched.
func (s *Service) Audit(ev store.AuditEvent) {
	if s.audit == nil {
		return
	}
	ev.ProjectID = uuidOrEmpty(ev.ProjectID)
	ev.TokenID = uuidOrEmpty(ev.TokenID)
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.CreatedAt.IsZero() {
		ev.CreatedAt = s.clock()
	}
	s.audit.Audit(ev)
}

func uuidOrEmpty(id string) string {
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return ""
	}
	return id
}

// Outcome classifies the error of a management call for its audit event:
// success for nil, failure for a rejected request (validation, not found,
// conflict), error for anything else. reason is a short safe description.
func Outcome(err error) (outcome, reason string) {
	var ve *ValidationError
	switch {
	case err == nil:
		return store.OutcomeSuccess, ""
	case errors.As(err, &ve), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		return store.OutcomeFailure, err.Error()
	default:
		return store.OutcomeError, err.Error()
	}
}

// clock is the current time in UTC at the database's precision.
func (s *Service) clock() time.Time {
	return s.now().UTC().Truncate(time.Microsecond)
}

// Pagination defaults and bounds for list calls. MaxOffset bounds
// (page-1)*page_size: deeper pages are refused rather than computed with an
// offset that overflows or makes the database walk millions of rows.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
	MaxOffset       = 10_000_000
)

// PageQuery asks for one page of a list. Zero values mean the first page and
// DefaultPageSize.
type PageQuery struct {
	Page     int
	PageSize int
}

func (q PageQuery) resolve() (store.Page, error) {
	p := store.Page{Page: q.Page, PageSize: q.PageSize}
	if p.Page == 0 {
		p.Page = 1
	}
	if p.PageSize == 0 {
		p.PageSize = DefaultPageSize
	}
	if p.Page < 1 {
		return p, invalid("page", "must be at least 1")
	}
	if p.PageSize < 1 || p.PageSize > MaxPageSize {
		return p, invalid("page_size", "must be between 1 and %d", MaxPageSize)
	}
	// Divided, not multiplied: (page-1)*page_size may overflow.
	if last := MaxOffset/p.PageSize + 1; p.Page > last {
		return p, invalid("page", "must be at most %d with page_size %d (offsets stop at %d)", last, p.PageSize, MaxOffset)
	}
	return p, nil
}

// List is one page of records and the total number of matching records.
type List[T any] struct {
	Items []T
	store.Page
	Total int
}
