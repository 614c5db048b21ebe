// Package sso is the device login of SPEC §6.5: a coding agent or CLI asks
// for a device code, a person signs in with the OIDC provider in a browser
// and approves the device, and the agent's poll returns an agent token
// ("sk-agent-…") tied to that person.
//
// Every piece of state — device and user codes (hashed), the browser's
// sign-in in flight (OAuth state, nonce, PKCE verifier), the signed-in
// identity and the approval — lives in the database, so the start, the
// provider's callback, the approval and the polling may each land on a
// different replica. The provider is found by OIDC discovery from
// Config.Issuer on first use; ID tokens are verified by go-oidc (issuer,
// audience, expiry, signature) and the nonce, verified email and
// SSO_ALLOWED_DOMAINS here.
//
// The agent token appears only in the body of the poll that redeems the
// device code: never in a URL, a page or a log. Wrong user codes are
// limited per client address with exponential back-off in
// auth_rate_limits, and starts — device codes and browser sign-ins, the
// requests that write a row for an unauthenticated client — per client
// address in a per-minute budget (Config.StartLimit). The JSON endpoints
// answer in the OAuth error shape (RFC 8628) rather than the OpenAI one;
// the pages are html/template documents embedded in the binary, usable
// without JavaScript, whose POST forms carry a CSRF token. Because they
// answer in those shapes, the handlers write their own error responses and
// log their own 5xx (with the request ID), never the cause to the client.
package sso

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Defaults of Config.
const (
	DefaultTokenTTL   = 720 * time.Hour
	DefaultCodeTTL    = 10 * time.Minute
	DefaultInterval   = 5 * time.Second
	DefaultSessionTTL = time.Hour
)

// Limits of wrong user codes per client address: FreeAttempts wrong codes
// pass with a warning, each further one blocks the address for BlockBase,
// doubled per further failure up to BlockMax. The count starts again once
// an address has made no attempt for ResetAfter.
const (
	FreeAttempts = 4
	BlockBase    = 30 * time.Second
	BlockMax     = time.Hour
	ResetAfter   = time.Hour
)

// Config is the SSO configuration (SPEC §6.5). Issuer empty means SSO is
// off; cmd/proxy then builds no Service.
type Config struct {
	Issuer       string // SSO_ISSUER
	ClientID     string // SSO_CLIENT_ID
	ClientSecret string // SSO_CLIENT_SECRET; never logged
	RedirectURL  string // SSO_REDIRECT_URL; must reach /auth/callback
	// AllowedDomains are the email domains allowed to sign in, lower case
	// (SSO_ALLOWED_DOMAINS); empty allows any verified email.
	AllowedDomains []string
	Project        string        // SSO_PROJECT: project ID or name
	TokenTTL       time.Duration // SSO_TOKEN_TTL (default 720h)
	// PublicURL is the proxy's external root (PUBLIC_URL), for the
	// verification URI; empty derives it from each request.
	PublicURL string

	// StartLimit is how many device-login starts — device codes and
	// browser sign-ins together, each of which writes a row — one client
	// address may make per minute (SSO_START_LIMIT); 0 is no limit.
	StartLimit int
	// Limiter counts the starts under "sso-start:<address>": cmd/proxy
	// passes its rate limiter, which with Redis is shared by the replicas
	// and fails open or closed as REDIS_FAIL_OPEN says (default: an
	// in-process limiter).
	Limiter ratelimit.Limiter

	CodeTTL    time.Duration // device code lifetime (default 10m)
	Interval   time.Duration // polling interval (default 5s)
	SessionTTL time.Duration // browser sign-in lifetime (default 1h)
	// HTTPClient reaches the provider (default: a client with a 10 s
	// timeout).
	HTTPClient *http.Client
	Now        func() time.Time // default time.Now
	Logger     *slog.Logger     // default: discard
}

// Store is the part of store.Store the device login uses; store.Store
// satisfies it.
type Store interface {
	auth.ProjectStore
	CreatePendingAuthorization(ctx context.Context, p *store.PendingAuthorization) error
	GetPendingAuthorization(ctx context.Context, id string) (*store.PendingAuthorization, error)
	GetPendingAuthorizationByUserCode(ctx context.Context, userCodeHash string) (*store.PendingAuthorization, error)
	DecidePendingAuthorization(ctx context.Context, id, status, provider, subject, email string, now time.Time) error
	PollDeviceCode(ctx context.Context, deviceCodeHash string, now time.Time, interval time.Duration, tok *store.AgentToken) (string, error)
	GetAgentToken(ctx context.Context, id string) (*store.AgentToken, error)
	ListAgentTokens(ctx context.Context, f store.AgentTokenFilter) ([]*store.AgentToken, int, error)
	RevokeAgentToken(ctx context.Context, id string) error
	CreateSSOSession(ctx context.Context, s *store.SSOSession) error
	GetSSOSessionByHash(ctx context.Context, secretHash string) (*store.SSOSession, error)
	CompleteSSOSession(ctx context.Context, id, provider, subject, email string) error
	DeleteSSOSession(ctx context.Context, id string) error
	CountAuthFailure(ctx context.Context, identifier string, now, resetBefore time.Time) (int, error)
	GetAuthBlock(ctx context.Context, identifier string) (*store.AuthBlock, error)
	RecordAuthBlocks(ctx context.Context, blocks []store.AuthBlock) error
}

var _ Store = store.Store(nil)

// Invalidator drops a revoked agent token from every replica's cache
// (*invalidate.Bus).
type Invalidator interface {
	InvalidateToken(id string)
}

// Auditor receives audit events without blocking (*usage.Recorder).
type Auditor interface {
	Audit(store.AuditEvent)
}

// Service serves the device login. It is safe for concurrent use and
// starts no goroutines.
type Service struct {
	cfg   Config
	st    Store
	inval Invalidator
	audit Auditor
	now   func() time.Time
	log   *slog.Logger

	mu  sync.Mutex
	idp *provider // discovered on first use

	console ConsoleSignIn // set before serving; nil without the console
}

// New returns a Service; cfg.Issuer must be set.
func New(cfg Config, st Store, inval Invalidator, audit Auditor) *Service {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.CodeTTL <= 0 {
		cfg.CodeTTL = DefaultCodeTTL
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Limiter == nil {
		cfg.Limiter = ratelimit.NewMemory()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	return &Service{cfg: cfg, st: st, inval: inval, audit: audit, now: cfg.Now, log: cfg.Logger}
}

// clock is the current time in UTC at the database's precision.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// errNoProject is the device endpoints' answer while SSO_PROJECT names no
// project.
var errNoProject = errors.New("SSO_PROJECT names no project yet")

// checkProject reports errNoProject while the agent project does not exist.
func (s *Service) checkProject(ctx context.Context) error {
	_, err := auth.ResolveProject(ctx, s.st, s.cfg.Project)
	if errors.Is(err, auth.ErrNoAgentProject) {
		return errNoProject
	}
	return err
}

// User codes: 8 characters from an alphabet without vowels (no words) and
// without look-alikes, shown as XXXX-XXXX (RFC 8628 §6.1).
const (
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
)

// newUserCode returns a random user code without its dash.
func newUserCode() (string, error) {
	b := make([]byte, userCodeLen)
	out := make([]byte, userCodeLen)
	for i := 0; i < userCodeLen; {
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		for _, c := range b {
			// 240 = 12 × 20: rejecting larger bytes keeps the choice uniform.
			if c < 240 && i < userCodeLen {
				out[i] = userCodeAlphabet[int(c)%len(userCodeAlphabet)]
				i++
			}
		}
	}
	return string(out), nil
}

// normalizeUserCode returns the code a person typed in canonical form
// (upper case, without dashes and spaces), or "" when it cannot be one.
func normalizeUserCode(typed string) string {
	if len(typed) > 32 {
		return ""
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(typed) {
		switch {
		case r == '-' || r == ' ':
		case strings.ContainsRune(userCodeAlphabet, r):
			b.WriteRune(r)
		default:
			return ""
		}
	}
	if b.Len() != userCodeLen {
		return ""
	}
	return b.String()
}

// displayUserCode renders a canonical user code as XXXX-XXXX.
func displayUserCode(code string) string { return code[:4] + "-" + code[4:] }

// randomString returns n random bytes in unpadded base64url.
func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hash is the hex SHA-256 under which codes and session secrets are stored.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// publicURL is the proxy's external root: PUBLIC_URL, else the request's
// scheme and host.
func (s *Service) publicURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: r.Host}).String()
}

// secureCookies reports whether cookies must be Secure: behind TLS or with
// an https PUBLIC_URL.
func (s *Service) secureCookies(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(s.cfg.PublicURL, "https://")
}

// blockIdentifier is the auth_rate_limits row of wrong user codes from ip
// (an IPv6 address counts by its /64, like failed authentications).
func blockIdentifier(ip string) string { return "device-code:" + auth.ClientKey(ip) }

// blockFor is how long the n-th wrong code in a row blocks its address (0:
// not at all).
func blockFor(n int) time.Duration {
	if n <= FreeAttempts {
		return 0
	}
	d := BlockBase
	for i := FreeAttempts + 1; i < n && d < BlockMax; i++ {
		d *= 2
	}
	return min(d, BlockMax)
}

// blocked returns how much longer ip is blocked from entering user codes
// (0: not blocked).
func (s *Service) blocked(ctx context.Context, ip string) (time.Duration, error) {
	b, err := s.st.GetAuthBlock(ctx, blockIdentifier(ip))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if wait := b.BlockedUntil.Sub(s.clock()); wait > 0 {
		return wait, nil
	}
	return 0, nil
}

// wrongCode counts a wrong user code from ip and returns the block it
// earned (0: none yet) and the attempts left before one.
func (s *Service) wrongCode(ctx context.Context, ip string) (wait time.Duration, left int, err error) {
	now := s.clock()
	id := blockIdentifier(ip)
	n, err := s.st.CountAuthFailure(ctx, id, now, now.Add(-ResetAfter))
	if err != nil {
		return 0, 0, err
	}
	wait = blockFor(n)
	if wait == 0 {
		return 0, FreeAttempts - n, nil
	}
	err = s.st.RecordAuthBlocks(ctx, []store.AuthBlock{{Identifier: id, FailedAttempts: n, LastAttemptAt: now, BlockedUntil: now.Add(wait)}})
	return wait, 0, err
}

// startKey is the rate-limit key of device-login starts from ip (an IPv6
// address counts by its /64, like wrong codes).
func startKey(ip string) string { return "sso-start:" + auth.ClientKey(ip) }

// startWait spends one of ip's device-login starts and returns 0, or how
// long ip must wait when its budget is spent (nothing is spent then). A
// limiter that cannot decide (Redis away, failing closed) is an error
// wrapping ratelimit.ErrUnavailable. Refusals are not audited: a row per
// refusal would be the very write the limit is there to bound.
func (s *Service) startWait(ctx context.Context, ip string) (time.Duration, error) {
	if s.cfg.StartLimit <= 0 {
		return 0, nil
	}
	d, err := s.cfg.Limiter.Allow(ctx, ratelimit.Request{Key: startKey(ip), Limit: int64(s.cfg.StartLimit), Cost: 1})
	if err != nil {
		return 0, fmt.Errorf("limit device-login starts: %w", err)
	}
	if d.Allowed {
		return 0, nil
	}
	return d.RetryAfter, nil
}

// auditEvent returns an audit event of the device login.
func (s *Service) auditEvent(r *http.Request, reqID, ip, actor, action, outcome string) store.AuditEvent {
	return store.AuditEvent{
		ID:        newID(),
		CreatedAt: s.clock(),
		Actor:     auth.Bound(actor, 256),
		Action:    action,
		Outcome:   outcome,
		RequestID: reqID,
		ClientIP:  ip,
		Method:    r.Method,
		Path:      auth.Bound(r.URL.Path, auth.MaxAuditPath),
	}
}
