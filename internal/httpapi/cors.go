package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/policy"
)

// CORS for browser apps (SPEC §6.7). Preflights carry no token, so they are
// answered from the union of the active projects' origins; an actual
// request is held to its own token's project.

// Origins answers whether some active project allows a browser origin,
// without a database round trip in the steady state (*policy.Origins).
type Origins interface {
	Allowed(ctx context.Context, origin string) bool
}

const (
	// corsHeaders are the request headers a preflight always allows.
	corsHeaders = "authorization, content-type, x-api-key, anthropic-version, x-session-id, x-project-root"
	// corsExposed are the response headers browser code may read.
	corsExposed = "x-request-id, x-cache, retry-after"
	// corsMaxAge is how long (seconds) a browser may reuse a preflight.
	corsMaxAge = "600"
	// maxAskedHeaders bounds the extra headers a preflight echoes back.
	maxAskedHeaders = 20
)

// preflight answers OPTIONS: 204 always, with CORS headers only for an
// origin that some active project allows. Nothing else is allowed without
// the proxy's say: a missing Origin gets the bare 204.
func (s *Server) preflight(c echo.Context) error {
	r := c.Request()
	h := c.Response().Header()
	h.Add(echo.HeaderVary, echo.HeaderOrigin)
	origin := r.Header.Get(echo.HeaderOrigin)
	if origin == "" || s.d.Origins == nil || !s.d.Origins.Allowed(r.Context(), origin) {
		return c.NoContent(http.StatusNoContent)
	}
	h.Set(echo.HeaderAccessControlAllowOrigin, origin)
	h.Set(echo.HeaderAccessControlAllowMethods, forwardedMethods)
	h.Set(echo.HeaderAccessControlAllowHeaders, corsHeaders+askedHeaders(r.Header.Get(echo.HeaderAccessControlRequestHeaders)))
	h.Set(echo.HeaderAccessControlMaxAge, corsMaxAge)
	return c.NoContent(http.StatusNoContent)
}

// askedHeaders returns ", "-prefixed the headers of a preflight's
// Access-Control-Request-Headers that are harmless to allow beyond
// corsHeaders: well-formed names, none that speak for the proxy or the
// connection (cookies, forwarding, hop-by-hop, sec-*), at most
// maxAskedHeaders.
func askedHeaders(asked string) string {
	var b strings.Builder
	n := 0
	for name := range strings.SplitSeq(asked, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" || !harmlessHeader(name) || strings.Contains(corsHeaders, name) {
			continue
		}
		if n++; n > maxAskedHeaders {
			break
		}
		b.WriteString(", ")
		b.WriteString(name)
	}
	return b.String()
}

func harmlessHeader(name string) bool {
	if len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	switch name {
	case "cookie", "host", "forwarded", "x-real-ip", "connection", "keep-alive", "te", "trailer",
		"transfer-encoding", "upgrade", "content-length", "x-request-id":
		return false
	}
	for _, prefix := range []string{"x-forwarded-", "proxy-", "sec-"} {
		if strings.HasPrefix(name, prefix) {
			return false
		}
	}
	return true
}

// checkOrigin holds a browser request (one with an Origin) to its token's
// project: an origin the project does not allow is 403 before anything
// goes upstream, an allowed one gets the CORS response headers. Requests
// without Origin (servers, SDKs) are untouched.
func checkOrigin(c echo.Context, p *auth.Principal) error {
	origin := c.Request().Header.Get(echo.HeaderOrigin)
	if origin == "" {
		return nil
	}
	h := c.Response().Header()
	h.Add(echo.HeaderVary, echo.HeaderOrigin)
	if !policy.OriginAllowed(p.Project.AllowedOrigins, origin) {
		return &Error{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "origin_not_allowed",
			Message: "this project does not allow requests from this origin (allowed_origins)"}
	}
	h.Set(echo.HeaderAccessControlAllowOrigin, origin)
	h.Set(echo.HeaderAccessControlExposeHeaders, corsExposed)
	return nil
}
