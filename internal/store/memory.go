package store

import (
	"context"
	"errors"
	"time"
)

// ErrLeaseLost means a memory session's summarising lease was no longer
// held by the worker that tried to finish it (it expired and another
// worker claimed the session); the caller drops its result.
var ErrLeaseLost = errors.New("memory session lease lost")

// Memory session states.
const (
	MemoryActive     = "active"     // has activity not yet summarised
	MemorySummarized = "summarized" // the latest activity is summarised
	MemoryFailed     = "failed"     // summarising gave up; LastError says why
)

// ProjectDir maps a user's project root to its stable project ID
// ("proj-<n>"), a row of user_project_dirs.
type ProjectDir struct {
	UserID      string
	ProjectRoot string
	ProjectID   string
	CreatedAt   time.Time
}

// MemorySession is one agent session's latest transcript and its
// summarising state. (UserID, SessionID) is its key: session IDs are chosen
// by clients, so they are unique per user only.
type MemorySession struct {
	UserID            string
	SessionID         string
	ProjectID         string // "proj-<n>", "" without a project root
	ProjectRoot       string
	UpstreamProjectID string // the project whose upstream summarises it
	Model             string // the model of its last request
	Transcript        string // redacted and capped JSON (see package memory)
	LastActivity      time.Time
	State             string
	Attempts          int // summarising attempts since the last success
	LockedBy          string
	LockedUntil       *time.Time
	NextAttemptAt     *time.Time
	LastError         string
	SummaryVersion    int // the last version summarised, 0 for none
	CreatedAt         time.Time
}

// SessionSummary is the structured summary of one session (one version of
// it). List fields hold one item per line.
type SessionSummary struct {
	ID               string
	UserID           string
	ProjectID        string
	ProjectRoot      string
	SessionID        string
	SessionStart     *time.Time
	BackendModel     string
	Title            string
	Scope            string
	Goals            string
	KeyDecisions     string
	TouchedFiles     string
	TestsRun         string
	Errors           string
	RemainingTasks   string
	CompletionStatus string
	FullAnalysis     string // the summariser's raw answer
	SummaryVersion   int
	CreatedAt        time.Time
}

// ProjectDirFilter selects project roots, oldest first. Empty UserID does
// not filter.
type ProjectDirFilter struct {
	UserID string
	Page
}

// SummaryFilter selects session summaries, newest first. Empty fields do
// not filter.
type SummaryFilter struct {
	UserID    string
	ProjectID string
	SessionID string
	Page
}

// MemoryClaim asks for idle memory sessions to summarise.
type MemoryClaim struct {
	Worker     string    // names the claiming worker (locked_by)
	IdleBefore time.Time // last activity before it
	Now        time.Time // leases ending and back-offs due before it are free
	LeaseUntil time.Time // the claim holds until then
	Limit      int       // at most this many (> 0)
}

// MemoryFailure records a failed summarising attempt.
type MemoryFailure struct {
	Worker    string
	UserID    string
	SessionID string
	Reason    string
	RetryAt   time.Time // next attempt not before; ignored with GiveUp
	GiveUp    bool      // state becomes MemoryFailed
}

// MemoryStore keeps cross-session memory (SPEC §6.6). It is part of Store.
type MemoryStore interface {
	// ProjectDir returns the project ID of (userID, root), creating
	// "proj-<n>" on first use with one insert-or-select statement, so
	// concurrent first uses (on any number of replicas) get one ID.
	ProjectDir(ctx context.Context, userID, root string, at time.Time) (string, error)
	ListProjectDirs(ctx context.Context, f ProjectDirFilter) ([]*ProjectDir, int, error)

	// StartMemorySession inserts s unless its session exists, and reports
	// whether it did: exactly one of concurrent callers sees true.
	StartMemorySession(ctx context.Context, s *MemorySession) (bool, error)
	// SaveTranscript upserts the session's transcript, project, model and
	// last activity unless the stored activity is newer; the session
	// becomes MemoryActive again (a new summary version follows) with its
	// attempts and back-off reset. Leases are kept.
	SaveTranscript(ctx context.Context, s *MemorySession) error
	GetMemorySession(ctx context.Context, userID, sessionID string) (*MemorySession, error)
	// ClaimMemorySessions leases up to c.Limit MemoryActive sessions with a
	// transcript whose last activity is before c.IdleBefore, whose lease
	// and back-off are over, oldest activity first, counting an attempt on
	// each. Concurrent claims never return the same session (FOR UPDATE
	// SKIP LOCKED on PostgreSQL).
	ClaimMemorySessions(ctx context.Context, c MemoryClaim) ([]*MemorySession, error)
	// CompleteMemorySession stores sum (upserted by user, session and
	// version) and releases the lease of worker in one transaction: the
	// session becomes MemorySummarized, or stays MemoryActive when it had
	// activity after claimed (its LastActivity when claimed).
	// ErrLeaseLost when worker no longer holds the lease; nothing is
	// written then.
	CompleteMemorySession(ctx context.Context, worker string, claimed time.Time, sum *SessionSummary) error
	// FailMemorySession records a failed attempt and releases the lease;
	// ErrLeaseLost when worker no longer holds it.
	FailMemorySession(ctx context.Context, f MemoryFailure) error
	// DeleteMemorySession deletes a session's transcript and all its
	// summaries and returns how many rows it deleted.
	DeleteMemorySession(ctx context.Context, userID, sessionID string) (int64, error)

	GetSessionSummary(ctx context.Context, id string) (*SessionSummary, error)
	ListSessionSummaries(ctx context.Context, f SummaryFilter) ([]*SessionSummary, int, error)
	// DeleteSessionSummary deletes one summary; ErrNotFound when missing.
	DeleteSessionSummary(ctx context.Context, id string) error
	// DeleteSummariesBefore deletes at most limit (> 0) summaries created
	// before t, oldest first, and returns how many it deleted.
	DeleteSummariesBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	// DeleteMemorySessionsBefore deletes at most limit (> 0) sessions not
	// active since t, oldest first, and returns how many it deleted.
	DeleteMemorySessionsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
}
