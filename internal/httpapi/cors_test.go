package httpapi

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/manage"
)

// preflightFrom sends a browser's preflight for a POST with an
// Authorization header from origin ("" sends none).
func (e *policyEnv) preflightFrom(origin, askedHeaders string) *httptest.ResponseRecorder {
	e.t.Helper()
	h := []string{"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", askedHeaders}
	if origin != "" {
		h = append(h, "Origin", origin)
	}
	return e.do(http.MethodOptions, "/v1/chat/completions", "", "", h...)
}

// wantCORS checks the CORS headers of a response: allowOrigin "" means none
// at all.
func wantCORS(t *testing.T, what string, w *httptest.ResponseRecorder, allowOrigin string) {
	t.Helper()
	h := w.Header()
	if got := h.Get("Access-Control-Allow-Origin"); got != allowOrigin {
		t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", what, got, allowOrigin)
	}
	if allowOrigin == "" {
		for k := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("%s: unexpected %s: %q", what, k, h.Get(k))
			}
		}
	}
}

func varyOrigin(h http.Header) bool {
	return slices.ContainsFunc(h.Values("Vary"), func(v string) bool { return strings.Contains(v, "Origin") })
}

// TestBrowserCORS plays a browser: a preflight, then the actual request
// with its Origin, for allowed, other, missing and wildcard origins.
func TestBrowserCORS(t *testing.T) {
	t.Parallel()
	e := newPolicyEnv(t)
	const app, other = "https://app.example.com", "https://evil.example"
	web := e.project(manage.CreateProjectInput{Name: "web", AllowedOrigins: []string{app, "http://localhost:5173"}})
	server := e.project(manage.CreateProjectInput{Name: "server-only"})
	webTok, serverTok := e.token(web), e.token(server)

	// Allowed origin: the preflight grants it, the request carries the
	// headers browser code needs.
	w := e.preflightFrom(app, "authorization, content-type, openai-beta, cookie, x-forwarded-for")
	if w.Code != http.StatusNoContent {
		t.Fatalf("preflight: %d", w.Code)
	}
	wantCORS(t, "preflight, allowed origin", w, app)
	allowHeaders := w.Header().Get("Access-Control-Allow-Headers")
	for _, want := range []string{"authorization", "content-type", "x-api-key", "anthropic-version", "x-session-id", "x-project-root", "openai-beta"} {
		if !strings.Contains(allowHeaders, want) {
			t.Errorf("Access-Control-Allow-Headers %q lacks %s", allowHeaders, want)
		}
	}
	for _, refused := range []string{"cookie", "x-forwarded-for"} {
		if strings.Contains(allowHeaders, refused) {
			t.Errorf("Access-Control-Allow-Headers %q allows %s", allowHeaders, refused)
		}
	}
	if !strings.Contains(w.Header().Get("Access-Control-Allow-Methods"), "POST") || w.Header().Get("Access-Control-Max-Age") == "" ||
		!varyOrigin(w.Header()) || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight headers: %v", w.Header())
	}
	w = e.do("POST", "/v1/chat/completions", webTok, chat("gpt-4o"), "Origin", app)
	if w.Code != http.StatusOK {
		t.Fatalf("actual request, allowed origin: %d %s", w.Code, w.Body)
	}
	wantCORS(t, "actual request, allowed origin", w, app)
	if exp := w.Header().Get("Access-Control-Expose-Headers"); !strings.Contains(exp, "x-request-id") ||
		!strings.Contains(exp, "x-cache") || !strings.Contains(exp, "retry-after") || !varyOrigin(w.Header()) {
		t.Errorf("actual request headers: %v", w.Header())
	}
	if len(e.upstreamCalls()) != 1 {
		t.Fatal("allowed request did not reach the upstream")
	}
	// An error a browser must be able to read carries the headers too.
	w = e.do("POST", "/v1/chat/completions", webTok, `{"model":`, "Origin", app)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("bad body: %d", w.Code)
	}
	wantCORS(t, "error answer, allowed origin", w, app)

	// Another origin: no CORS headers on the preflight, 403 on the request,
	// nothing upstream.
	wantCORS(t, "preflight, other origin", e.preflightFrom(other, "authorization"), "")
	w = e.do("POST", "/v1/chat/completions", webTok, chat("gpt-4o"), "Origin", other)
	if w.Code != http.StatusForbidden || decodeError(t, w).Code != "origin_not_allowed" {
		t.Errorf("actual request, other origin: %d %s", w.Code, w.Body)
	}
	wantCORS(t, "actual request, other origin", w, "")
	if len(e.upstreamCalls()) != 0 {
		t.Error("a refused origin reached the upstream")
	}
	// An origin some other project allows is still refused for this token.
	w = e.do("POST", "/v1/chat/completions", serverTok, chat("gpt-4o"), "Origin", app)
	if w.Code != http.StatusForbidden || len(e.upstreamCalls()) != 0 {
		t.Errorf("token of a project without origins, from an allowed origin: %d", w.Code)
	}
	wantCORS(t, "preflight, origin \"null\"", e.preflightFrom("null", "authorization"), "")

	// No Origin (servers, SDKs): unaffected, no CORS headers.
	w = e.preflightFrom("", "")
	if w.Code != http.StatusNoContent {
		t.Errorf("preflight without Origin: %d", w.Code)
	}
	wantCORS(t, "preflight without Origin", w, "")
	w = e.do("POST", "/v1/chat/completions", serverTok, chat("gpt-4o"))
	if w.Code != http.StatusOK {
		t.Errorf("request without Origin: %d %s", w.Code, w.Body)
	}
	wantCORS(t, "request without Origin", w, "")
	e.upstreamCalls()

	// A wildcard project: any origin, echoed (never "*").
	wild := e.project(manage.CreateProjectInput{Name: "wild", AllowedOrigins: []string{"*"}})
	wildTok := e.token(wild)
	wantCORS(t, "preflight, wildcard project", e.preflightFrom(other, "authorization"), other)
	w = e.do("POST", "/v1/chat/completions", wildTok, chat("gpt-4o"), "Origin", other)
	if w.Code != http.StatusOK {
		t.Errorf("wildcard project: %d %s", w.Code, w.Body)
	}
	wantCORS(t, "actual request, wildcard project", w, other)
}

// TestDeactivatedProjectOriginIsWithdrawn deactivates the only project that
// allows an origin: the next preflight (cache TTL an hour) refuses it,
// through invalidation alone.
func TestDeactivatedProjectOriginIsWithdrawn(t *testing.T) {
	t.Parallel()
	e := newPolicyEnv(t)
	const app = "https://app.example.com"
	web := e.project(manage.CreateProjectInput{Name: "web", AllowedOrigins: []string{app}})
	wantCORS(t, "before", e.preflightFrom(app, "authorization"), app)
	if _, err := e.mgr.UpdateProject(t.Context(), web.ID, manage.UpdateProjectInput{IsActive: new(false)}); err != nil {
		t.Fatal(err)
	}
	wantCORS(t, "after deactivation", e.preflightFrom(app, "authorization"), "")

	// Changing a project's origins is invalidated the same way.
	other := e.project(manage.CreateProjectInput{Name: "other"})
	wantCORS(t, "origin of no project", e.preflightFrom("https://new.example", "authorization"), "")
	if _, err := e.mgr.UpdateProject(t.Context(), other.ID, manage.UpdateProjectInput{AllowedOrigins: &[]string{"https://new.example"}}); err != nil {
		t.Fatal(err)
	}
	wantCORS(t, "origin just added", e.preflightFrom("https://new.example", "authorization"), "https://new.example")
}
