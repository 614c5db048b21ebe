// Package console is the admin console (SPEC §6.8): server-rendered
// html/template pages under /console, enhanced with htmx, with usage charts
// drawn by uPlot. Both libraries are vendored under assets/vendor and
// embedded in the binary, so the console needs no CDN, no Node and no
// separate process.
//
// Operators sign in with the management token or, when SSO is configured,
// by SSO if their email is in CONSOLE_ADMINS. Sessions live in the
// database (any replica accepts them); the browser holds only a random
// session id in an HttpOnly, SameSite=Strict cookie. A token session ends
// when the management token changes, an SSO session when its person leaves
// CONSOLE_ADMINS (checked on every request). Every state-changing form
// carries a CSRF token derived from the session. The pages call
// internal/manage, the logic the management API uses, so validation and its
// messages are the API's, and every action leaves an audit event whose
// actor is "console" (token sessions) or the person's email (SSO).
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

// Sessions keeps console sessions; store.Store satisfies it.
type Sessions interface {
	CreateConsoleSession(ctx context.Context, s *store.ConsoleSession) error
	GetConsoleSession(ctx context.Context, idHash string) (*store.ConsoleSession, error)
	TouchConsoleSession(ctx context.Context, idHash string, at time.Time) error
	DeleteConsoleSession(ctx context.Context, idHash string) error
	DeleteConsoleSessionsBefore(ctx context.Context, expired, idle time.Time, limit int) (int64, error)
}

// FailureLimiter counts failed sign-ins per client address like failed
// API authentications (*auth.FailureLimiter); Blocked does no I/O.
type FailureLimiter interface {
	Blocked(ip string) (retryAfter time.Duration, blocked bool)
	Fail(ctx context.Context, f auth.Failure)
}

// SSO starts sign-ins at the identity provider for the console
// (*sso.Service). The provider's callback comes back through
// Console.FinishSSO.
type SSO interface {
	StartConsoleSignIn(c echo.Context) error
}

// Options configure a Console. Manager, Sessions, Failures and
// ManagementToken are required; SSO and Admins go together.
type Options struct {
	Manager  *manage.Service
	Sessions Sessions
	Failures FailureLimiter
	// Metrics is the registry /metrics serves; the cluster page shows its
	// figures. Nil leaves the page without them.
	Metrics prometheus.Gatherer
	// SchemaVersion describes the database schema's version for the
	// cluster page (e.g. "7 (this build: 7)"); nil leaves it out.
	SchemaVersion func(ctx context.Context) (string, error)
	// Replicas lists the replicas seen for the cluster page, on which
	// ReplicaID (this process's) is marked; nil leaves them out.
	Replicas  Replicas
	ReplicaID string
	// ManagementToken signs operators in; changing it ends every session
	// opened with it.
	ManagementToken string
	// SSO, when set, offers "Sign in with SSO" to the people in Admins
	// (CONSOLE_ADMINS): emails, or "@domain" for everyone of a domain,
	// matched without regard to case.
	SSO    SSO
	Admins []string
	// TrustedProxies are the peers whose X-Forwarded-Proto is believed when
	// deciding whether the cookie is Secure.
	TrustedProxies []netip.Prefix
	// SessionIdle and SessionMax end a session after that long without a
	// request, and that long after sign-in.
	SessionIdle time.Duration
	SessionMax  time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Console serves the admin console. It is safe for concurrent use.
type Console struct {
	o      Options
	admins map[string]bool // Admins in lower case
	pages  map[string]*template.Template
	assets *assetSet
}

// New returns a Console for o; it fails only if an embedded template or
// asset is broken.
func New(o Options) (*Console, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Manager == nil || o.Sessions == nil || o.Failures == nil || o.ManagementToken == "" {
		return nil, errors.New("console: Manager, Sessions, Failures and ManagementToken are required")
	}
	if (o.SSO == nil) != (len(o.Admins) == 0) {
		return nil, errors.New("console: SSO and Admins go together")
	}
	admins := make(map[string]bool, len(o.Admins))
	for _, a := range o.Admins {
		admins[strings.ToLower(a)] = true
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	assets, err := loadAssets()
	if err != nil {
		return nil, err
	}
	return &Console{o: o, admins: admins, pages: pages, assets: assets}, nil
}

// Routes registers the console's routes on g, the /console group.
func (cn *Console) Routes(g *echo.Group) {
	g.Use(cn.secureHeaders, cn.renderErrors)
	g.GET("/assets/:name", cn.asset)
	g.GET("/signin", cn.signInPage)
	g.POST("/signin", cn.signIn)
	g.POST("/signin/sso", cn.signInSSO)

	p := g.Group("", cn.requireSession)
	p.GET("", cn.home)
	p.GET("/", cn.home)
	p.POST("/signout", cn.signOut)
	p.GET("/projects", cn.projects)
	p.POST("/projects", cn.createProject)
	p.GET("/projects/:id", cn.project)
	p.POST("/projects/:id", cn.updateProject)
	p.POST("/projects/:id/active", cn.setProjectActive)
	p.POST("/projects/:id/revoke-tokens", cn.revokeProjectTokens)
	p.GET("/tokens", cn.tokens)
	p.POST("/tokens", cn.createToken)
	p.POST("/tokens/:id/revoke", cn.revokeToken)
	p.GET("/usage", cn.usage)
	p.GET("/audit", cn.audit)
	p.GET("/audit/:id", cn.auditDetail)
	p.GET("/devices", cn.devices)
	p.POST("/devices/:id/revoke", cn.revokeDevice)
	p.GET("/memory", cn.memory)
	p.POST("/memory/summaries/:id/delete", cn.deleteSummary)
	p.GET("/cluster", cn.cluster)
}

func (cn *Console) home(c echo.Context) error {
	return c.Redirect(http.StatusSeeOther, "/console/usage")
}

// secureHeaders keeps console pages out of frames and caches and limits
// what they may load to the console itself.
func (cn *Console) secureHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		return next(c)
	}
}

// pageError is an error shown to the operator as a page with its status.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return e.msg }

// renderErrors is the console's one error handler: a *pageError or an echo
// error becomes an HTML page with its status; anything else is logged and
// shown as a generic 500 page. It never shows an internal error's text.
func (cn *Console) renderErrors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if err == nil || c.Response().Committed {
			return err
		}
		var (
			pe *pageError
			he *echo.HTTPError
		)
		switch {
		case errors.As(err, &pe):
		case errors.As(err, &he):
			pe = &pageError{status: he.Code, msg: fmt.Sprint(he.Message)}
		case errors.Is(err, store.ErrNotFound):
			pe = &pageError{status: http.StatusNotFound, msg: "not found"}
		default:
			cn.o.Logger.ErrorContext(c.Request().Context(), "console request failed", "err", err,
				"path", c.Path(), "request_id", c.Response().Header().Get(echo.HeaderXRequestID))
			pe = &pageError{status: http.StatusInternalServerError, msg: "internal error; the server log has the details"}
		}
		return cn.render(c, pe.status, "error", errorPage{Status: pe.status, Message: pe.msg})
	}
}

type errorPage struct {
	Status  int
	Message string
}
