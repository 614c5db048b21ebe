// Package auth resolves token secrets — withering tokens and agent tokens
// (SPEC §6.5) — to the token, its project and the project's decrypted
// upstream key.
//
// The path is secret → SHA-256 → in-process cache → store. A cache hit costs
// one SHA-256 and one map lookup under a read lock; the store is asked only
// on a miss, and concurrent misses for the same secret share one lookup.
// Revocation and deactivation reach the cache through InvalidateToken,
// InvalidateProject and Flush (driven by pub/sub); without them an entry is
// reloaded after Options.TTL (SPEC §6.1).
//
// When the store fails (database down), a token whose entry is older than
// TTL keeps being served from that entry until it is Options.StaleTTL old
// (SPEC §7: cached tokens keep working); the store is retried at most once
// per TTL per token meanwhile. Unknown tokens and store failures without a
// usable entry are never served from cache.
//
// Agent tokens ("sk-agent-…", issued by internal/sso) take the same path
// and the same cache: their project is Options.AgentProject, resolved by
// name or ID when the token is loaded, and their Principal carries the
// agent token besides a Token built from it (ID, expiry, activity), so the
// admission, invalidation and usage steps treat both kinds alike.
//
// FailureLimiter limits and audits failed authentications per client, and
// Bound bounds the strings audited with them.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Errors returned by Authenticate. Refusals of a known token come wrapped in
// a *DeniedError.
var (
	// ErrUnknownToken means the secret is malformed or matches no token.
	ErrUnknownToken = errors.New("invalid token")
	// ErrExpired means the token's expires_at has passed.
	ErrExpired = errors.New("token expired")
	// ErrRevoked means the token was deactivated.
	ErrRevoked = errors.New("token revoked")
	// ErrProjectInactive means the token's project was deactivated.
	ErrProjectInactive = errors.New("project inactive")
	// ErrAgentExpired means an agent token's sign-in has expired; it is
	// ErrExpired too (errors.Is).
	ErrAgentExpired = fmt.Errorf("%w: sign in again with POST /auth/device/code", ErrExpired)
	// ErrNoAgentProject means the project of agent tokens (SSO_PROJECT)
	// does not exist, or SSO is off.
	ErrNoAgentProject = errors.New("the project of agent tokens (SSO_PROJECT) does not exist")
)

// DeniedError reports that a known token was refused. Err is ErrRevoked,
// ErrExpired or ErrProjectInactive; the IDs are for the audit trail.
type DeniedError struct {
	TokenID   string
	ProjectID string
	Err       error
}

func (e *DeniedError) Error() string { return e.Err.Error() }

// Unwrap returns the sentinel, so errors.Is(err, ErrExpired) works.
func (e *DeniedError) Unwrap() error { return e.Err }

// Token format: "sk-" followed by 32 random bytes in unpadded base64url.
const (
	tokenPrefix    = "sk-"
	tokenRandBytes = 32
	// TokenLen is the length of a token secret.
	TokenLen = len(tokenPrefix) + 43
	// PrefixLen is the length of a token's display prefix.
	PrefixLen = 10
)

// Agent token format: "sk-agent-" followed by 32 random bytes in unpadded
// base64url, so logs and scanners can tell it from a withering token.
const (
	agentTokenPrefix = "sk-agent-"
	// AgentTokenLen is the length of an agent token secret.
	AgentTokenLen = len(agentTokenPrefix) + 43
	// AgentPrefixLen is the length of an agent token's display prefix.
	AgentPrefixLen = 14
)

// NewAgentToken returns a fresh agent token secret ("sk-agent-" + 43
// base64url characters of 32 CSPRNG bytes), its display prefix and the hex
// SHA-256 of the secret.
func NewAgentToken() (secret, prefix, hash string, err error) {
	b := make([]byte, tokenRandBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", "", fmt.Errorf("generate agent token: %w", err)
	}
	secret = agentTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, secret[:AgentPrefixLen], Hash(secret), nil
}

// NewToken returns a fresh secret ("sk-" + 43 base64url characters of 32
// CSPRNG bytes), its display prefix (the first PrefixLen characters) and the
// hex SHA-256 of the secret, which is what the store keeps.
func NewToken() (secret, prefix, hash string, err error) {
	b := make([]byte, tokenRandBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", "", fmt.Errorf("generate token: %w", err)
	}
	secret = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, secret[:PrefixLen], Hash(secret), nil
}

// Hash returns the hex SHA-256 of a token secret.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// wellFormed reports whether s has the shape NewToken (prefix "sk-", n
// TokenLen) or NewAgentToken produces, so garbage never reaches the cache
// or the store.
func wellFormed(s, prefix string, n int) bool {
	if len(s) != n || s[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Principal is who a request acts as: an immutable snapshot taken when the
// token was loaded. The same value is shared by every request that hits the
// cache, so callers must not modify it (nor what its pointers point to).
// Token.RequestCount and Token.LastUsedAt are as of the load;
// Project.APIKeyEncrypted is cleared.
type Principal struct {
	Token   store.Token
	Project store.Project
	APIKey  string // decrypted upstream key; never log it
	// Agent is the agent token when the secret is one (nil for a
	// withering token); Token is then built from it: its ID, the agent's
	// label and prefix, expiry at AuthExpiresAt, no quota or limits of its
	// own.
	Agent *store.AgentToken
	// Identity names the person behind an agent token (SSO, issue #11),
	// stable across their devices; empty for withering tokens. Memory
	// keeps a person's sessions under it.
	Identity string
}

// Options tune an Authenticator. Zero values take the defaults.
type Options struct {
	// TTL is how long a loaded token is served without asking the store
	// (default 5s). It bounds how late a revocation takes effect when the
	// invalidation channel is down.
	TTL time.Duration
	// NegativeTTL is how long an unknown secret is remembered (default 5s).
	NegativeTTL time.Duration
	// StaleTTL is how long after its load a token may still be served while
	// the store fails (default 10×TTL; a value ≤ TTL disables stale serving).
	StaleTTL time.Duration
	// MaxEntries bounds the cached entries, known and unknown (default
	// 100000), so spraying random secrets cannot grow memory without bound.
	// When full, a sampled entry is evicted, preferring unusable and unknown
	// ones. It bounds the secrets remembered for AuthenticateCached too.
	MaxEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives stale-serving warnings (default: discard).
	Logger *slog.Logger
	// Agents loads agent tokens; nil (SSO off) makes every agent token
	// unknown.
	Agents AgentStore
	// AgentProject names the project whose upstream serves agent tokens
	// (SSO_PROJECT): a project ID or name, resolved when a token is loaded.
	AgentProject string
}

// AgentStore is the part of store.Store an Authenticator reads for agent
// tokens; store.Store satisfies it.
type AgentStore interface {
	GetAgentTokenByHash(ctx context.Context, hash string) (*store.AgentToken, error)
	ProjectStore
}

var _ AgentStore = store.Store(nil)

// TokenStore is the part of store.Store an Authenticator reads;
// store.Store satisfies it. A cold token costs one call, one database
// round trip.
type TokenStore interface {
	GetTokenAndProjectByHash(ctx context.Context, hash string) (*store.Token, *store.Project, error)
}

var _ TokenStore = store.Store(nil)

// Authenticator resolves token secrets with an in-process cache. It is safe
// for concurrent use and starts no goroutines.
type Authenticator struct {
	st       TokenStore
	cipher   *secret.Cipher
	ttl      time.Duration
	negTTL   time.Duration
	staleTTL time.Duration
	max      int
	now      func() time.Time
	log      *slog.Logger
	agents   AgentStore
	agentPrj string

	mu        sync.RWMutex
	entries   map[[sha256.Size]byte]*entry
	byToken   map[string][sha256.Size]byte
	byProject map[string]map[[sha256.Size]byte]struct{}
	flights   map[[sha256.Size]byte]*flight
	// known holds the keys whose last lookup found a token. Unlike entries,
	// invalidation keeps them: it means "reload", not "unknown", and
	// AuthenticateCached may reload only what it knows to exist.
	known map[[sha256.Size]byte]struct{}
	// epoch counts invalidations. A load that started in an earlier epoch
	// may have read pre-invalidation rows, so its result is not cached and
	// later callers do not join it.
	epoch uint64
	// agentProject is the SSO_PROJECT every agent token is served by,
	// cached for TTL within one epoch (any invalidation drops it), so a
	// cold agent token costs one database round trip, not two or three.
	agentProject struct {
		p        *store.Project
		loadedAt time.Time
		epoch    uint64
	}
}

// entry is immutable once stored; updates replace it.
type entry struct {
	p        *Principal // nil: the secret matches no token
	loadedAt time.Time
	// retryAt, when set, is an entry served stale after a store failure:
	// it is used without asking the store until then.
	retryAt time.Time
}

// flight is one store lookup shared by concurrent misses of the same key.
type flight struct {
	done  chan struct{}
	epoch uint64
	p     *Principal
	err   error
}

// New returns an Authenticator over st that decrypts upstream keys with c.
func New(st TokenStore, c *secret.Cipher, opts Options) *Authenticator {
	if opts.TTL <= 0 {
		opts.TTL = 5 * time.Second
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 5 * time.Second
	}
	if opts.StaleTTL == 0 {
		opts.StaleTTL = 10 * opts.TTL
	}
	if opts.StaleTTL < opts.TTL {
		opts.StaleTTL = opts.TTL
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 100000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Authenticator{
		st:        st,
		cipher:    c,
		ttl:       opts.TTL,
		negTTL:    opts.NegativeTTL,
		staleTTL:  opts.StaleTTL,
		max:       opts.MaxEntries,
		now:       opts.Now,
		log:       opts.Logger,
		agents:    opts.Agents,
		agentPrj:  opts.AgentProject,
		entries:   make(map[[sha256.Size]byte]*entry),
		byToken:   make(map[string][sha256.Size]byte),
		byProject: make(map[string]map[[sha256.Size]byte]struct{}),
		flights:   make(map[[sha256.Size]byte]*flight),
		known:     make(map[[sha256.Size]byte]struct{}),
	}
}

// Authenticate resolves a bearer secret. It checks, in order, that the token
// exists (ErrUnknownToken), is active (ErrRevoked), has not expired
// (ErrExpired, against Now on every call, cached or not) and that its
// project is active (ErrProjectInactive); refusals of a known token are
// *DeniedError. A store failure is returned wrapped, unless a recent entry
// can be served stale (see the package doc). The returned Principal is
// shared and must not be modified.
func (a *Authenticator) Authenticate(ctx context.Context, secret string) (*Principal, error) {
	key, agent, ok := keyOf(secret)
	if !ok {
		return nil, ErrUnknownToken
	}
	now := a.now()
	a.mu.RLock()
	e := a.entries[key]
	a.mu.RUnlock()
	if a.usable(e, now) {
		return check(e.p, now)
	}
	return a.load(ctx, key, agent)
}

// AuthenticateCached is Authenticate for clients blocked after too many
// failed authentications (SPEC §6.1): it asks the store only about a secret
// whose last lookup found a token (to reload it when stale or invalidated),
// and answers ErrUnknownToken without a lookup for any other secret, so a
// blocked client's guesses cost no database round trip while its valid
// tokens keep working. A token this process has not looked up since it
// started is refused too. Errors are those of Authenticate.
func (a *Authenticator) AuthenticateCached(ctx context.Context, secret string) (*Principal, error) {
	key, agent, ok := keyOf(secret)
	if !ok {
		return nil, ErrUnknownToken
	}
	now := a.now()
	a.mu.RLock()
	e := a.entries[key]
	_, known := a.known[key]
	a.mu.RUnlock()
	if a.usable(e, now) {
		return check(e.p, now)
	}
	if !known {
		return nil, ErrUnknownToken
	}
	return a.load(ctx, key, agent)
}

// keyOf returns the cache key of a well-formed secret and whether it is an
// agent token.
func keyOf(secret string) (key [sha256.Size]byte, agent, ok bool) {
	// Fixed-size copies keep the conversion off the heap (secret has
	// exactly that many bytes here).
	switch {
	case wellFormed(secret, tokenPrefix, TokenLen):
		var buf [TokenLen]byte
		copy(buf[:], secret)
		return sha256.Sum256(buf[:]), false, true
	case wellFormed(secret, agentTokenPrefix, AgentTokenLen):
		var buf [AgentTokenLen]byte
		copy(buf[:], secret)
		return sha256.Sum256(buf[:]), true, true
	}
	return key, false, false
}

// usable reports whether e answers without asking the store.
func (a *Authenticator) usable(e *entry, now time.Time) bool {
	switch {
	case e == nil:
		return false
	case e.p == nil:
		return now.Sub(e.loadedAt) < a.negTTL
	default:
		return now.Sub(e.loadedAt) < a.ttl || now.Before(e.retryAt)
	}
}

// check applies the per-request checks to a loaded principal (nil: unknown).
func check(p *Principal, now time.Time) (*Principal, error) {
	if p == nil {
		return nil, ErrUnknownToken
	}
	var err error
	switch {
	case !p.Token.IsActive:
		err = ErrRevoked
	case !now.Before(p.Token.ExpiresAt) && p.Agent != nil:
		err = ErrAgentExpired
	case !now.Before(p.Token.ExpiresAt):
		err = ErrExpired
	case !p.Project.IsActive:
		err = ErrProjectInactive
	default:
		return p, nil
	}
	return nil, &DeniedError{TokenID: p.Token.ID, ProjectID: p.Project.ID, Err: err}
}

// load answers a miss: it joins the current lookup of key or leads a new one.
func (a *Authenticator) load(ctx context.Context, key [sha256.Size]byte, agent bool) (*Principal, error) {
	for {
		now := a.now()
		a.mu.Lock()
		if e := a.entries[key]; a.usable(e, now) {
			a.mu.Unlock()
			return check(e.p, now)
		}
		f := a.flights[key]
		if f == nil || f.epoch != a.epoch {
			f = &flight{done: make(chan struct{}), epoch: a.epoch}
			a.flights[key] = f
			a.mu.Unlock()
			a.lead(ctx, key, agent, f)
			return a.result(f)
		}
		a.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("authenticate: %w", ctx.Err())
		}
		// The leader gave up because its own request went away; this caller
		// is still waiting, so it looks up the token itself.
		if isContextErr(f.err) && ctx.Err() == nil {
			continue
		}
		return a.result(f)
	}
}

func (a *Authenticator) result(f *flight) (*Principal, error) {
	if f.err != nil {
		return nil, f.err
	}
	return check(f.p, a.now())
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// lead performs the lookup of f, records the outcome in the cache and
// releases the callers waiting on f.
func (a *Authenticator) lead(ctx context.Context, key [sha256.Size]byte, agent bool, f *flight) {
	fetch := a.fetch
	if agent {
		fetch = a.fetchAgent
	}
	p, err := fetch(ctx, key)
	now := a.now()

	a.mu.Lock()
	defer close(f.done)
	defer a.mu.Unlock()
	if a.flights[key] == f {
		delete(a.flights, key)
	}
	current := f.epoch == a.epoch
	switch {
	case err == nil:
		if current {
			a.putLocked(key, &entry{p: p, loadedAt: now})
		}
	case errors.Is(err, ErrUnknownToken):
		if current {
			a.putLocked(key, &entry{loadedAt: now})
		}
		p, err = nil, ErrUnknownToken
	case isContextErr(err) || errors.Is(err, secret.ErrDecrypt) || errors.Is(err, ErrNoAgentProject):
		// None says anything about the database: the leader's request
		// went away, or the key is unreadable or SSO_PROJECT names no
		// project (configuration errors that stale serving would only
		// hide).
	default:
		// The store failed. Invalidation deletes entries, so an entry still
		// here was not revoked through the channel since it was loaded.
		old := a.entries[key]
		if old != nil && old.p != nil && now.Sub(old.loadedAt) < a.staleTTL {
			retryAt := earliest(now.Add(a.ttl), old.loadedAt.Add(a.staleTTL))
			a.entries[key] = &entry{p: old.p, loadedAt: old.loadedAt, retryAt: retryAt}
			a.log.Warn("store unavailable, serving cached token",
				"token_id", old.p.Token.ID, "project_id", old.p.Project.ID,
				"cached_for", now.Sub(old.loadedAt).String(), "error", err)
			p, err = old.p, nil
		} else if old != nil && old.p != nil {
			a.removeLocked(key)
		}
	}
	f.p, f.err = p, err
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// fetch loads the token and project of key from the store in one query and
// decrypts the upstream key of a usable token. Unknown tokens are
// ErrUnknownToken.
func (a *Authenticator) fetch(ctx context.Context, key [sha256.Size]byte) (*Principal, error) {
	tok, proj, err := a.st.GetTokenAndProjectByHash(ctx, hex.EncodeToString(key[:]))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownToken
	}
	if err != nil {
		return nil, fmt.Errorf("load token: %w", err)
	}
	p := &Principal{Token: *tok, Project: *proj}
	p.Token.LoadedAt = time.Now() // the wall clock quota.Redis compares it with, not Now
	p.Project.APIKeyEncrypted = nil
	if tok.IsActive && proj.IsActive {
		plain, err := a.cipher.Decrypt(proj.APIKeyEncrypted)
		if err != nil {
			return nil, fmt.Errorf("decrypt upstream key of project %s: %w", proj.ID, err)
		}
		p.APIKey = string(plain)
	}
	return p, nil
}

// fetchAgent loads the agent token of key and the agent project (by ID,
// else by name; cached, see agentProjectCached), and decrypts the upstream
// key of a usable token. Unknown tokens, and every agent token while SSO is
// off, are ErrUnknownToken; a missing project is ErrNoAgentProject.
func (a *Authenticator) fetchAgent(ctx context.Context, key [sha256.Size]byte) (*Principal, error) {
	if a.agents == nil || a.agentPrj == "" {
		return nil, ErrUnknownToken
	}
	at, err := a.agents.GetAgentTokenByHash(ctx, hex.EncodeToString(key[:]))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownToken
	}
	if err != nil {
		return nil, fmt.Errorf("load agent token: %w", err)
	}
	proj, err := a.agentProjectCached(ctx)
	if err != nil {
		return nil, err
	}
	p := &Principal{
		Token: store.Token{ID: at.ID, ProjectID: proj.ID, Hash: at.Hash, Prefix: at.Prefix, Label: at.Label,
			ExpiresAt: at.AuthExpiresAt, IsActive: at.IsActive, CreatedAt: at.CreatedAt},
		Project:  *proj,
		Agent:    at,
		Identity: at.UserID(),
	}
	p.Project.APIKeyEncrypted = nil
	if at.IsActive && proj.IsActive {
		plain, err := a.cipher.Decrypt(proj.APIKeyEncrypted)
		if err != nil {
			return nil, fmt.Errorf("decrypt upstream key of project %s: %w", proj.ID, err)
		}
		p.APIKey = string(plain)
	}
	return p, nil
}

// agentProjectCached returns the agent project from the cache, or resolves
// it (ResolveProject) and caches it unless an invalidation happened
// meanwhile. Callers copy the project; the cached one is never modified.
func (a *Authenticator) agentProjectCached(ctx context.Context) (*store.Project, error) {
	now := a.now()
	a.mu.RLock()
	c, epoch := a.agentProject, a.epoch
	a.mu.RUnlock()
	if c.p != nil && c.epoch == epoch && now.Sub(c.loadedAt) < a.ttl {
		return c.p, nil
	}
	proj, err := ResolveProject(ctx, a.agents, a.agentPrj)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.epoch == epoch {
		a.agentProject.p, a.agentProject.loadedAt, a.agentProject.epoch = proj, now, epoch
	}
	a.mu.Unlock()
	return proj, nil
}

// ProjectStore loads projects by ID and by name; store.Store satisfies
// it.
type ProjectStore interface {
	GetProject(ctx context.Context, id string) (*store.Project, error)
	GetProjectByName(ctx context.Context, name string) (*store.Project, error)
}

// ResolveProject returns the project named by ref (SSO_PROJECT): the
// project with that ID, else the one with that name. ErrNoAgentProject
// when there is neither.
func ResolveProject(ctx context.Context, ps ProjectStore, ref string) (*store.Project, error) {
	if ref == "" {
		return nil, ErrNoAgentProject
	}
	proj, err := ps.GetProject(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		proj, err = ps.GetProjectByName(ctx, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("load project %q: %w", ref, ErrNoAgentProject)
	}
	if err != nil {
		return nil, fmt.Errorf("load project %q: %w", ref, err)
	}
	return proj, nil
}

// putLocked stores e under key, evicting an entry first when full.
func (a *Authenticator) putLocked(key [sha256.Size]byte, e *entry) {
	if _, ok := a.entries[key]; ok {
		a.removeLocked(key)
	} else if len(a.entries) >= a.max {
		a.evictLocked(a.now())
	}
	a.entries[key] = e
	if e.p == nil {
		delete(a.known, key)
		return
	}
	if _, ok := a.known[key]; !ok && len(a.known) >= a.max {
		for k := range a.known { // an arbitrary one: map order
			delete(a.known, k)
			break
		}
	}
	a.known[key] = struct{}{}
	a.byToken[e.p.Token.ID] = key
	keys := a.byProject[e.p.Project.ID]
	if keys == nil {
		keys = make(map[[sha256.Size]byte]struct{})
		a.byProject[e.p.Project.ID] = keys
	}
	keys[key] = struct{}{}
}

// evictSample is how many entries an eviction looks at.
const evictSample = 8

// evictLocked removes one entry: the first unusable one among a random
// sample (map iteration order), else the oldest unknown-secret entry of the
// sample, else its oldest entry. Preferring unknown secrets keeps a spray of
// random secrets from pushing out real tokens.
func (a *Authenticator) evictLocked(now time.Time) {
	var (
		victim [sha256.Size]byte
		best   *entry
		n      int
	)
	for k, e := range a.entries {
		if !a.worthKeeping(e, now) {
			victim, best = k, e
			break
		}
		if best == nil || evictBefore(e, best) {
			victim, best = k, e
		}
		if n++; n == evictSample {
			break
		}
	}
	if best != nil {
		a.removeLocked(victim)
	}
}

// worthKeeping reports whether e can still answer a request: an unknown
// secret within NegativeTTL, a token within StaleTTL.
func (a *Authenticator) worthKeeping(e *entry, now time.Time) bool {
	if e.p == nil {
		return now.Sub(e.loadedAt) < a.negTTL
	}
	return now.Sub(e.loadedAt) < a.staleTTL
}

// evictBefore orders eviction candidates: unknown secrets first, then older
// loads.
func evictBefore(e, than *entry) bool {
	if (e.p == nil) != (than.p == nil) {
		return e.p == nil
	}
	return e.loadedAt.Before(than.loadedAt)
}

func (a *Authenticator) removeLocked(key [sha256.Size]byte) {
	e, ok := a.entries[key]
	if !ok {
		return
	}
	delete(a.entries, key)
	if e.p == nil {
		return
	}
	if a.byToken[e.p.Token.ID] == key {
		delete(a.byToken, e.p.Token.ID)
	}
	if keys := a.byProject[e.p.Project.ID]; keys != nil {
		delete(keys, key)
		if len(keys) == 0 {
			delete(a.byProject, e.p.Project.ID)
		}
	}
}

// InvalidateToken drops the cached entry of a token, so its next
// Authenticate reloads it from the store. Lookups already under way are not
// cached.
func (a *Authenticator) InvalidateToken(tokenID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch++
	if key, ok := a.byToken[tokenID]; ok {
		a.removeLocked(key)
	}
}

// InvalidateProject drops every cached token of a project.
func (a *Authenticator) InvalidateProject(projectID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch++
	for key := range a.byProject[projectID] {
		a.removeLocked(key)
	}
}

// Flush drops every cached entry, known and unknown; use it when
// invalidations may have been missed (after a pub/sub reconnect). Which
// secrets named a token is kept, for AuthenticateCached.
func (a *Authenticator) Flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch++
	a.entries = make(map[[sha256.Size]byte]*entry)
	a.byToken = make(map[string][sha256.Size]byte)
	a.byProject = make(map[string]map[[sha256.Size]byte]struct{})
}

// Len reports how many entries (known and unknown secrets) are cached.
func (a *Authenticator) Len() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.entries)
}
