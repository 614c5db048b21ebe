// Package store holds the domain records of LLM Proxy and the Store
// interface that the PostgreSQL and SQLite implementations satisfy.
//
// Implementations translate their driver errors once, at the seam, into the
// sentinels below; callers compare with errors.Is and never inspect driver
// error strings.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors every implementation returns (wrapped) for the matching
// conditions.
var (
	// ErrNotFound means the record does not exist (a malformed ID counts as
	// not found).
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique or foreign-key constraint refused the write.
	ErrConflict = errors.New("conflict")
	// ErrQuotaExceeded means a token's max_requests is used up.
	ErrQuotaExceeded = errors.New("request quota exceeded")
	// ErrPoolExhausted means no database connection became free within the
	// configured pool timeout.
	ErrPoolExhausted = errors.New("database pool exhausted")
)

// Provider names accepted for a project.
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderAzure     = "azure"
)

// Project is a team's upstream account: where requests go and with which key.
// Limits of 0 mean unlimited. AllowedOrigins are the browser origins it
// serves (empty: none); AllowedModels are glob patterns of the models its
// tokens may use (empty: any); CacheTTLSeconds is the response cache's
// default lifetime (0: only on request). Empty lists are nil.
type Project struct {
	ID              string
	Name            string
	Provider        string
	BaseURL         string
	APIVersion      string // Azure only
	APIKeyEncrypted []byte // AES-256-GCM ciphertext; never the clear key
	APIKeyHint      string // masked form for display, e.g. "sk-...wxyz"
	IsActive        bool
	DeactivatedAt   *time.Time
	RPMLimit        int
	TPMLimit        int
	AllowedOrigins  []string
	AllowedModels   []string
	CacheTTLSeconds int
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Token is a withering token. Only the SHA-256 of its secret (hex) is stored.
// MaxRequests nil means unlimited; limits of 0 mean unlimited. AllowedModels
// narrows its project's list (empty, nil: the project's list alone).
type Token struct {
	ID            string
	ProjectID     string
	Hash          string // hex SHA-256 of the secret
	Prefix        string // short display prefix of the secret
	Label         string
	ExpiresAt     time.Time
	MaxRequests   *int64
	RequestCount  int64
	IsActive      bool
	DeactivatedAt *time.Time
	RPMLimit      int
	TPMLimit      int
	AllowedModels []string
	CreatedAt     time.Time
	LastUsedAt    *time.Time
	// LoadedAt is when this copy was read from the database, set by the
	// readers that serve the request path (zero when unknown); not a
	// column. quota.Redis seeds a new counter from a copy read moments ago
	// instead of reading it again.
	LoadedAt time.Time
}

// Usage is one proxied request. Empty optional IDs are stored as NULL.
type Usage struct {
	ID               string
	CreatedAt        time.Time
	RequestID        string
	ProjectID        string
	TokenID          string
	AgentTokenID     string
	UserID           string
	Model            string
	Endpoint         string
	Status           int
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	Latency          time.Duration // stored in milliseconds
	TTFB             time.Duration // stored in milliseconds
	Streamed         bool
	Cached           bool   // answered from the response cache
	Purpose          string // PurposeClient ("" reads as it) or PurposeMemory
}

// Usage purposes: why the upstream was called.
const (
	PurposeClient = "client" // a proxied client request
	PurposeMemory = "memory" // the memory summariser
)

// Audit outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
	OutcomeError   = "error"
)

// AuditEvent records a management action or an authentication failure.
// Empty optional IDs are stored as NULL; Metadata is stored as JSON.
type AuditEvent struct {
	ID        string
	CreatedAt time.Time
	Actor     string
	Action    string
	Outcome   string
	ProjectID string
	TokenID   string
	RequestID string
	ClientIP  string
	Method    string
	Path      string
	Reason    string
	Metadata  map[string]any
}

// AuthBlock is a client refused after too many failed authentications (a
// row of auth_rate_limits). Identifier names the client (its IP address, or
// an IPv6 /64 prefix); FailedAttempts is the count that caused the block.
type AuthBlock struct {
	Identifier     string
	FailedAttempts int
	LastAttemptAt  time.Time
	BlockedUntil   time.Time
}

// Pending authorization states (SPEC §6.5).
const (
	PendingStatusPending  = "pending"
	PendingStatusApproved = "approved"
	PendingStatusDenied   = "denied"
	PendingStatusExpired  = "expired"
)

// PendingAuthorization is one device-login attempt (SPEC §6.5). Only the
// SHA-256 of its device code and of its user code is stored. The identity
// fields are set when a signed-in person approves or denies it.
type PendingAuthorization struct {
	ID             string
	DeviceCodeHash string // hex SHA-256 of the device code
	UserCodeHash   string // hex SHA-256 of the normalised user code
	Status         string // one of the PendingStatus* values
	Label          string // the device's client_name
	Provider       string // the approving person's issuer
	Subject        string
	Email          string
	ClientIP       string // the device's address when it asked for the code
	LastPolledAt   *time.Time
	CreatedAt      time.Time
	ExpiresAt      time.Time
}

// AgentToken is a credential issued to a person's device after SSO
// (SPEC §6.5). Only the SHA-256 of its secret (hex) is stored; the person
// is (Provider, Subject), never Subject alone.
type AgentToken struct {
	ID                  string
	Hash                string // hex SHA-256 of the secret
	Prefix              string // short display prefix of the secret
	Provider            string // the OIDC issuer
	Subject             string
	Email               string
	Label               string
	IsActive            bool
	CreatedAt           time.Time
	LastAuthenticatedAt *time.Time // when the person signed in to approve it
	AuthExpiresAt       time.Time
}

// UserID is the person an agent token belongs to, as usage rows and memory
// name them: the provider and the subject.
func (a *AgentToken) UserID() string { return a.Provider + "#" + a.Subject }

// AgentTokenFilter selects agent tokens. Empty or nil fields do not
// filter; Provider and Subject filter together.
type AgentTokenFilter struct {
	Email    string
	Provider string
	Subject  string
	Active   *bool
	Page
}

// SSOSession is a browser's sign-in with the OIDC provider (SPEC §6.5).
// The cookie holds a secret whose SHA-256 (hex) is SecretHash. Until the
// provider's callback, State, Nonce and Verifier hold the login in flight
// and the identity is empty; the callback clears them and sets the
// identity. PendingID names the device authorization the sign-in is for
// ("" for a sign-in to list one's own devices). ReturnTo is where the
// sign-in goes after the callback: "" the device pages, SSOReturnConsole
// the admin console; the server sets it when the sign-in starts, and it is
// never a URL from a request.
type SSOSession struct {
	ID         string
	SecretHash string
	State      string
	Nonce      string
	Verifier   string
	PendingID  string
	ReturnTo   string
	Provider   string
	Subject    string
	Email      string
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// SSOReturnConsole is the SSOSession.ReturnTo of a sign-in to the admin
// console.
const SSOReturnConsole = "console"

// Outcomes of a device code poll (Store.PollDeviceCode).
const (
	PollPending  = "pending"
	PollSlowDown = "slow_down"
	PollExpired  = "expired"
	PollDenied   = "denied"
	PollIssued   = "issued"
)

// TokenTouch adds Requests to a token's request_count and moves its
// last_used_at forward to LastUsedAt (never backwards; a zero LastUsedAt
// leaves it alone). It is used for tokens whose count was not already
// advanced by ConsumeToken, and with negative Requests to give back the
// unserved rest of a ReserveRequests block.
type TokenTouch struct {
	TokenID    string
	Requests   int64
	LastUsedAt time.Time
}

// Page selects a page of a list; Page starts at 1.
type Page struct {
	Page     int
	PageSize int
}

// ProjectFilter selects projects. Nil fields do not filter.
type ProjectFilter struct {
	Active *bool
	Page
}

// TokenFilter selects tokens. Empty or nil fields do not filter.
type TokenFilter struct {
	ProjectID string
	Active    *bool
	Page
}

// AuditFilter selects audit events, newest first. Zero fields do not filter.
type AuditFilter struct {
	Action    string
	Outcome   string
	ProjectID string
	TokenID   string
	From, To  time.Time // From inclusive, To exclusive
	Page
}

// Usage groupings.
const (
	GroupByDay     = "day"
	GroupByModel   = "model"
	GroupByToken   = "token"
	GroupByCache   = "cache"
	GroupByPurpose = "purpose"
)

// UsageFilter selects usage rows for aggregation. Zero fields do not filter.
// GroupBy is one of GroupByDay, GroupByModel, GroupByToken, GroupByCache,
// GroupByPurpose or "" (one total).
type UsageFilter struct {
	ProjectID string
	TokenID   string
	From, To  time.Time // From inclusive, To exclusive
	GroupBy   string
}

// UsageTotal is one group of aggregated usage. Key is the day
// ("2006-01-02", UTC), the model, the token ID, "hit" or "miss" (cached or
// not), the purpose, or "" for the overall total.
type UsageTotal struct {
	Key              string
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// PoolStats are the connection pool figures exported as database_* metrics.
// Fields that do not apply to an implementation stay zero.
type PoolStats struct {
	MaxConns      int
	TotalConns    int
	IdleConns     int
	InUseConns    int
	AcquireCount  int64
	AcquireWait   time.Duration // cumulative
	ExhaustedErrs int64         // acquires that gave up after the pool timeout
	BusyWaits     int64         // SQLite: writes that waited for the writer
}

// Store is the persistence seam. All times are returned in UTC. Methods are
// safe for concurrent use. Lists return the page of records and the total
// number of matching records.
type Store interface {
	// CreateProject inserts p; p.ID must be set. A duplicate name is ErrConflict.
	CreateProject(ctx context.Context, p *Project) error
	GetProject(ctx context.Context, id string) (*Project, error)
	GetProjectByName(ctx context.Context, name string) (*Project, error)
	ListProjects(ctx context.Context, f ProjectFilter) ([]*Project, int, error)
	// ListAllowedOrigins returns the distinct allowed origins of every
	// active project, sorted, in one query (the CORS preflight union).
	ListAllowedOrigins(ctx context.Context) ([]string, error)
	// UpdateProject writes every mutable field of p (name, base_url,
	// api_version, api key, is_active, deactivated_at, limits, policies,
	// updated_at).
	UpdateProject(ctx context.Context, p *Project) error

	// CreateToken inserts t; t.ID must be set. An unknown project or a
	// duplicate hash is ErrConflict.
	CreateToken(ctx context.Context, t *Token) error
	GetToken(ctx context.Context, id string) (*Token, error)
	// GetTokenAndProjectByHash loads the token whose secret has the hex
	// SHA-256 hash, and its project, in one database round trip (the
	// cold path of authentication). ErrNotFound when there is no such
	// token.
	GetTokenAndProjectByHash(ctx context.Context, hash string) (*Token, *Project, error)
	ListTokens(ctx context.Context, f TokenFilter) ([]*Token, int, error)
	// UpdateToken writes label, max_requests, limits and allowed models of
	// t, and can deactivate it (is_active false, deactivated_at kept once
	// set) but never reactivate it: in one statement, so a concurrent revoke cannot be
	// undone by an update that read the token before it (SPEC §6.2).
	UpdateToken(ctx context.Context, t *Token) error
	// DeactivateProjectTokens deactivates every active token of a project and
	// returns how many changed.
	DeactivateProjectTokens(ctx context.Context, projectID string, at time.Time) (int64, error)
	// ConsumeToken atomically counts one request against the token's
	// max_requests (a single conditional update, never read-then-write) and
	// returns the new request_count. ErrQuotaExceeded when the quota is used
	// up, ErrNotFound when the token does not exist.
	ConsumeToken(ctx context.Context, tokenID string, at time.Time) (int64, error)
	// ReserveRequests atomically adds up to n (>= 0) requests to the token's
	// request_count: all n without max_requests, otherwise no more than
	// max_requests leaves (none when request_count has reached it). It
	// returns how many it added and the request_count after it, so n = 0
	// reads the count. It leaves last_used_at alone. ErrNotFound when the
	// token does not exist.
	ReserveRequests(ctx context.Context, tokenID string, n int64) (granted, count int64, err error)
	// TouchTokens applies request counts and last-use times in one batch,
	// in sorted ID order so concurrent batches cannot deadlock.
	TouchTokens(ctx context.Context, touches []TokenTouch) error

	// InsertUsage writes a batch of usage rows in one statement (or COPY)
	// and adds them to the usage roll-up, in one transaction: all or none.
	// A row whose ID is already stored with the same CreatedAt (a retried
	// batch) is ErrConflict. On PostgreSQL, whose usage table is
	// partitioned by time, an ID is unique only together with CreatedAt.
	InsertUsage(ctx context.Context, rows []Usage) error
	// SumUsage aggregates usage rows; its answers are the raw rows'
	// exactly, whether they come from the roll-up or not.
	SumUsage(ctx context.Context, f UsageFilter) ([]UsageTotal, error)

	// InsertAuditEvents writes a batch of audit events. Like usage rows,
	// an event is unique by ID and CreatedAt together on PostgreSQL.
	InsertAuditEvents(ctx context.Context, events []AuditEvent) error
	GetAuditEvent(ctx context.Context, id string) (*AuditEvent, error)
	ListAuditEvents(ctx context.Context, f AuditFilter) ([]*AuditEvent, int, error)

	// TryLock takes the named cluster-wide lock without waiting. On
	// PostgreSQL it is a session advisory lock (pg_try_advisory_lock of
	// hashtext(name)) held on a dedicated pooled connection until release;
	// on SQLite, which runs a single instance, it is an in-process lock.
	// ok is false when another holder (in this process or another) has the
	// lock; release is nil then. release is idempotent and safe for
	// concurrent use; if the holding connection dies the lock is lost with
	// it.
	TryLock(ctx context.Context, name string) (release func(), ok bool, err error)
	// DeleteUsageBefore deletes at most limit (> 0) usage rows created
	// before t, oldest first, in one short transaction that also takes
	// them out of the usage roll-up, and returns how many it deleted.
	DeleteUsageBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	// EnsurePartitions gives usage and audit events of every UTC day
	// overlapping [from, to) a partition of their own, and every day with
	// rows in a default partition too, moving those rows into it. It
	// returns how many partitions it created. Without partitions (SQLite)
	// it does nothing.
	EnsurePartitions(ctx context.Context, from, to time.Time) (int, error)
	// DropUsagePartitionsBefore drops the usage partitions whose whole day
	// is before t, and their roll-up rows with them, and returns how many
	// rows they held; rows before t outside them are left to
	// DeleteUsageBefore. Without partitions (SQLite) it does nothing.
	DropUsagePartitionsBefore(ctx context.Context, t time.Time) (int64, error)
	// DropAuditPartitionsBefore is DropUsagePartitionsBefore for audit
	// events.
	DropAuditPartitionsBefore(ctx context.Context, t time.Time) (int64, error)
	// DeleteAuditBefore deletes at most limit (> 0) audit events created
	// before t, oldest first, and returns how many it deleted.
	DeleteAuditBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	// DeleteTokensExpiredBefore deletes at most limit (> 0) tokens whose
	// expires_at is before t, earliest first, and returns how many it
	// deleted.
	DeleteTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)

	// RecordAuthBlocks upserts blocks by identifier in one transaction, in
	// sorted identifier order so concurrent batches cannot deadlock. Blocks
	// of one identifier, in the batch or already stored, merge: the later
	// BlockedUntil and LastAttemptAt win; FailedAttempts is the one of the
	// later BlockedUntil, or the larger when both end at the same time.
	RecordAuthBlocks(ctx context.Context, blocks []AuthBlock) error
	// ActiveAuthBlocks returns at most limit (> 0) blocks whose
	// BlockedUntil is after now, those ending last first.
	ActiveAuthBlocks(ctx context.Context, now time.Time, limit int) ([]AuthBlock, error)
	// DeleteAuthBlocksBefore deletes at most limit (> 0) blocks that ended
	// before t (rows without an end by their last attempt), earliest first,
	// and returns how many it deleted.
	DeleteAuthBlocksBefore(ctx context.Context, t time.Time, limit int) (int64, error)

	// UsageSeries sums the roll-up rows matching f by bucket and split key,
	// ordered by bucket then key; empty buckets are absent. The sums equal
	// the usage rows' (the roll-up is written with them). A filter that
	// fails f.Check is an error.
	UsageSeries(ctx context.Context, f UsageSeriesFilter) ([]UsagePoint, error)

	// CreateConsoleSession inserts s; a duplicate IDHash is ErrConflict.
	CreateConsoleSession(ctx context.Context, s *ConsoleSession) error
	// GetConsoleSession returns the session whose id hashes to idHash, or
	// ErrNotFound.
	GetConsoleSession(ctx context.Context, idHash string) (*ConsoleSession, error)
	// TouchConsoleSession moves the session's last_seen_at forward to at
	// (never backwards); an unknown session is not an error.
	TouchConsoleSession(ctx context.Context, idHash string, at time.Time) error
	// DeleteConsoleSession deletes the session; an unknown one is not an
	// error.
	DeleteConsoleSession(ctx context.Context, idHash string) error
	// DeleteConsoleSessionsBefore deletes at most limit (> 0) sessions whose
	// expires_at is before expired or whose last_seen_at is before idle,
	// and returns how many it deleted.
	DeleteConsoleSessionsBefore(ctx context.Context, expired, idle time.Time, limit int) (int64, error)
	// CreatePendingAuthorization inserts p; p.ID must be set. A duplicate
	// device or user code hash is ErrConflict.
	CreatePendingAuthorization(ctx context.Context, p *PendingAuthorization) error
	GetPendingAuthorization(ctx context.Context, id string) (*PendingAuthorization, error)
	GetPendingAuthorizationByUserCode(ctx context.Context, userCodeHash string) (*PendingAuthorization, error)
	// DecidePendingAuthorization sets the status of a pending, unexpired
	// authorization to approved or denied and records who decided, in one
	// conditional update. ErrNotFound when there is none; ErrConflict when
	// it was already decided or has expired at now.
	DecidePendingAuthorization(ctx context.Context, id, status, provider, subject, email string, now time.Time) error
	// PollDeviceCode answers one poll of a device code, atomically: it
	// returns PollExpired past expires_at; PollSlowDown when the previous
	// poll was less than interval before now; else PollPending or
	// PollDenied by status; and for an approved authorization it inserts
	// tok (ID, Hash, Prefix, IsActive, CreatedAt, LastAuthenticatedAt and
	// AuthExpiresAt set by the caller; the identity and label copied from
	// the authorization into tok) and deletes the authorization, in one
	// transaction, so a device code is redeemed at most once: PollIssued.
	// Every poll but an issuing one records now as last_polled_at.
	// ErrNotFound for an unknown (or redeemed) device code.
	PollDeviceCode(ctx context.Context, deviceCodeHash string, now time.Time, interval time.Duration, tok *AgentToken) (string, error)
	// DeletePendingAuthorizationsExpiredBefore deletes at most limit (> 0)
	// authorizations that expired before t, earliest first.
	DeletePendingAuthorizationsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)

	GetAgentToken(ctx context.Context, id string) (*AgentToken, error)
	GetAgentTokenByHash(ctx context.Context, hash string) (*AgentToken, error)
	// ListAgentTokens returns a page of agent tokens, newest first.
	ListAgentTokens(ctx context.Context, f AgentTokenFilter) ([]*AgentToken, int, error)
	// RevokeAgentToken deactivates an agent token (idempotent); ErrNotFound
	// when there is none.
	RevokeAgentToken(ctx context.Context, id string) error
	// DeleteAgentTokensExpiredBefore deletes at most limit (> 0) agent
	// tokens whose auth_expires_at is before t, earliest first.
	DeleteAgentTokensExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)

	// CreateSSOSession inserts s; s.ID must be set.
	CreateSSOSession(ctx context.Context, s *SSOSession) error
	GetSSOSessionByHash(ctx context.Context, secretHash string) (*SSOSession, error)
	// CompleteSSOSession records the signed-in identity of the session
	// whose login (State) is in flight and clears State, Nonce and
	// Verifier, in one conditional update, so a callback is used once.
	// ErrNotFound when there is no such session; ErrConflict when its
	// login is no longer in flight.
	CompleteSSOSession(ctx context.Context, id, provider, subject, email string) error
	// DeleteSSOSession deletes a session (idempotent).
	DeleteSSOSession(ctx context.Context, id string) error
	// DeleteSSOSessionsExpiredBefore deletes at most limit (> 0) sessions
	// that expired before t, earliest first.
	DeleteSSOSessionsExpiredBefore(ctx context.Context, t time.Time, limit int) (int64, error)

	// CountAuthFailure counts one failed attempt of identifier at now and
	// returns the count: the stored count plus one, or 1 when the last
	// attempt was before resetBefore. It keeps blocked_until.
	CountAuthFailure(ctx context.Context, identifier string, now, resetBefore time.Time) (int, error)
	// GetAuthBlock returns the row of identifier (BlockedUntil zero when it
	// is not blocked); ErrNotFound when there is none.
	GetAuthBlock(ctx context.Context, identifier string) (*AuthBlock, error)

	MemoryStore
	ReplicaStore

	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Stats reports pool figures for /metrics.
	Stats() PoolStats
	// Close releases every connection; the Store is unusable afterwards.
	Close() error
}

// PollOutcome is the answer to a poll of p at now, before any redemption
// (the rule both implementations of Store.PollDeviceCode apply): expired
// past its expiry, slow_down when polled again within interval, else by
// status.
func PollOutcome(p *PendingAuthorization, now time.Time, interval time.Duration) string {
	switch {
	case !now.Before(p.ExpiresAt) || p.Status == PendingStatusExpired:
		return PollExpired
	case p.LastPolledAt != nil && now.Sub(*p.LastPolledAt) < interval:
		return PollSlowDown
	case p.Status == PendingStatusApproved:
		return PollIssued
	case p.Status == PendingStatusDenied:
		return PollDenied
	default:
		return PollPending
	}
}
