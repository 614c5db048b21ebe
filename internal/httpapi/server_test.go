package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
)

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) errorDetail {
	t.Helper()
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("not an OpenAI error body: %q", rec.Body.String())
	}
	return body.Error
}

func TestPanicBecomesA500WithoutStackTrace(t *testing.T) {
	t.Parallel()
	s := New(Deps{})
	s.e.GET("/boom", func(echo.Context) error { panic("secret internals") })
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/boom", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "secret internals") || strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("panic details reached the client: %s", rec.Body.String())
	}
	if e := decodeError(t, rec); e.Code != "internal_error" || e.Type != "api_error" {
		t.Errorf("error = %+v", e)
	}
	if rec.Header().Get(echo.HeaderXRequestID) == "" {
		t.Error("no X-Request-ID on the 500")
	}
}

func TestUnknownRouteIsAnOpenAIError404(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	New(Deps{}).ServeHTTP(rec, httptest.NewRequest("GET", "/nope", nil))
	if rec.Code != http.StatusNotFound || decodeError(t, rec).Code != "not_found" {
		t.Errorf("status %d body %s", rec.Code, rec.Body.String())
	}
	if rec.Header().Get(echo.HeaderXRequestID) == "" {
		t.Error("no X-Request-ID on the 404")
	}
}

func TestDeviceLoginRoutesAre404WithoutSSO(t *testing.T) {
	srv := New(Deps{})
	for _, r := range []struct{ method, path string }{
		{"POST", "/auth/device/code"}, {"POST", "/auth/device/token"}, {"GET", "/auth/device"},
		{"GET", "/auth/callback"}, {"GET", "/auth/devices"},
	} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(r.method, r.path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s %s without SSO_ISSUER: %d, want 404", r.method, r.path, rec.Code)
		}
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sent string
		keep bool
	}{
		{"abc-123", true},
		{"", false},
		{"has space", false},
		{strings.Repeat("x", 129), false},
	} {
		s := New(Deps{})
		s.e.GET("/id", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
		req := httptest.NewRequest("GET", "/id", nil)
		req.Header.Set(echo.HeaderXRequestID, tc.sent)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		got := rec.Header().Get(echo.HeaderXRequestID)
		if got == "" || (got == tc.sent) != tc.keep {
			t.Errorf("sent %q: got %q, keep=%t", tc.sent, got, tc.keep)
		}
	}
}

func TestCredential(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		h    http.Header
		want string
	}{
		{"bearer", http.Header{"Authorization": {"Bearer sk-abc"}}, "sk-abc"},
		{"bearer any case, spaces", http.Header{"Authorization": {"bearer  sk-abc "}}, "sk-abc"},
		{"basic alone", http.Header{"Authorization": {"Basic dXNlcjpwdw=="}}, ""},
		{"x-api-key", http.Header{"X-Api-Key": {"sk-xyz"}}, "sk-xyz"},
		{"basic does not hide x-api-key", http.Header{"Authorization": {"Basic dXNlcjpwdw=="}, "X-Api-Key": {"sk-xyz"}}, "sk-xyz"},
		{"bearer wins over x-api-key", http.Header{"Authorization": {"Bearer sk-abc"}, "X-Api-Key": {"sk-xyz"}}, "sk-abc"},
		{"none", http.Header{}, ""},
	} {
		if got := credential(tc.h); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestInspectWhateverTheContentType: the upstream parses a JSON body
// whatever its label, so the gateway does too (usage injection and
// estimates cannot be skipped with text/plain).
func TestInspectWhateverTheContentType(t *testing.T) {
	t.Parallel()
	chat := `{"model":"gpt-4o","stream":true,"max_tokens":50}`
	for _, tc := range []struct {
		name, path, body string
		want             proxy.Info
		status           int
	}{
		{"chat", "/v1/chat/completions", chat, proxy.Info{Model: "gpt-4o", Stream: true, MaxTokens: 50, PromptEstimate: len(chat) / 4}, 0},
		{"object on another path", "/v1/audio/speech", `{"model":"tts-1"}`, proxy.Info{Model: "tts-1", PromptEstimate: 4}, 0},
		{"not JSON on another path", "/v1/files", "--boundary\r\n", proxy.Info{}, 0},
		{"brace but not JSON on another path", "/v1/files", "{not json", proxy.Info{}, 0},
		{"not JSON on a JSON endpoint", "/v1/chat/completions", "model=gpt-4o", proxy.Info{}, http.StatusBadRequest},
		{"array on a JSON endpoint", "/v1/embeddings", "[1]", proxy.Info{}, http.StatusBadRequest},
		{"empty", "/v1/chat/completions", "", proxy.Info{}, 0},
	} {
		got, err := inspect(tc.path, []byte(tc.body))
		switch {
		case tc.status == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.status != 0 && (err == nil || toError(err).Status != tc.status):
			t.Errorf("%s: err %v, want status %d", tc.name, err, tc.status)
		case got != tc.want:
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestReadBody(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		body    string
		length  int64
		max     int64
		wantErr int
	}{
		{"fits", "hello", 5, 10, 0},
		{"exactly max", "0123456789", 10, 10, 0},
		{"declared too large", "x", 11, 10, http.StatusRequestEntityTooLarge},
		{"chunked too large", strings.Repeat("x", 11), -1, 10, http.StatusRequestEntityTooLarge},
		{"no limit", strings.Repeat("x", 100), -1, 0, 0},
	} {
		req := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
		req.ContentLength = tc.length
		got, err := readBody(req, tc.max)
		switch {
		case tc.wantErr == 0 && (err != nil || string(got) != tc.body):
			t.Errorf("%s: %q, %v", tc.name, got, err)
		case tc.wantErr != 0 && toError(err).Status != tc.wantErr:
			t.Errorf("%s: err %v, want status %d", tc.name, err, tc.wantErr)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("lookup: %w", auth.ErrUnknownToken), 401, "invalid_api_key"},
		{auth.ErrExpired, 401, "token_expired"},
		{auth.ErrRevoked, 401, "token_revoked"},
		{auth.ErrProjectInactive, 403, "project_inactive"},
		{fmt.Errorf("get: %w", store.ErrNotFound), 404, "not_found"},
		{store.ErrConflict, 409, "conflict"},
		{fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded), 429, "insufficient_quota"},
		{store.ErrPoolExhausted, 503, "database_busy"},
		{&proxy.Error{Status: 502, Msg: "upstream unreachable"}, 502, "upstream_unreachable"},
		{&proxy.Error{Status: 504, Msg: "upstream timed out"}, 504, "upstream_timeout"},
		{&proxy.Error{Status: 499, Msg: "client went away"}, 499, "client_closed_request"},
		{echo.ErrMethodNotAllowed, 405, "method_not_allowed"},
		{errors.New("boom"), 500, "internal_error"},
	} {
		s := New(Deps{})
		s.e.GET("/err", func(echo.Context) error { return tc.err })
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/err", nil))
		if rec.Code != tc.status || decodeError(t, rec).Code != tc.code {
			t.Errorf("%v: status %d body %s, want %d %s", tc.err, rec.Code, rec.Body.String(), tc.status, tc.code)
		}
	}
}

func TestRetryAfterIsWholeSecondsRoundedUp(t *testing.T) {
	t.Parallel()
	s := New(Deps{})
	s.e.GET("/limited", func(echo.Context) error {
		return &Error{Status: 429, Type: "rate_limit_error", Code: "rate_limited", Message: "slow down", RetryAfter: 1200 * time.Millisecond}
	})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/limited", nil))
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Errorf("status %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// A spent max_requests quota never comes back, so the answer must not
// invite the SDKs' automatic retries; a rate limit must.
func TestRetryHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		err         error
		retryAfter  string
		shouldRetry string
	}{
		{"quota used up", fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded), "", "false"},
		{"rate limited", &Error{Status: 429, Type: "rate_limit_error", Code: "rate_limited", Message: "slow down", RetryAfter: 3 * time.Second}, "3", ""},
	} {
		s := New(Deps{})
		s.e.GET("/err", func(echo.Context) error { return tc.err })
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/err", nil))
		if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%s: Retry-After %q, want %q", tc.name, got, tc.retryAfter)
		}
		if got := rec.Header().Get("X-Should-Retry"); got != tc.shouldRetry {
			t.Errorf("%s: x-should-retry %q, want %q", tc.name, got, tc.shouldRetry)
		}
	}
}

func TestClientAddressTrustsOnlyConfiguredProxies(t *testing.T) {
	t.Parallel()
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     string
		want    string
	}{
		{"no proxies: the peer, whatever the header says", nil, "198.51.100.7:5000", "203.0.113.1", "198.51.100.7"},
		{"private peer is not trusted by default", nil, "192.168.1.2:5000", "203.0.113.1", "192.168.1.2"},
		{"trusted peer: the client it names", lb, "10.1.2.3:5000", "203.0.113.1", "203.0.113.1"},
		{"spoofed entries left of the real client are ignored", lb, "10.1.2.3:5000", "6.6.6.6, 203.0.113.1", "203.0.113.1"},
		{"chain of trusted proxies", lb, "10.1.2.3:5000", "203.0.113.1, 10.9.9.9", "203.0.113.1"},
		{"untrusted peer: its header is ignored", lb, "198.51.100.7:5000", "203.0.113.1", "198.51.100.7"},
		{"loopback is not trusted unless listed", lb, "127.0.0.1:5000", "203.0.113.1", "127.0.0.1"},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = tc.peer
		req.Header.Set("X-Forwarded-For", tc.xff)
		if got := ipExtractor(tc.trusted)(req); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// fakeAdmission answers Admit with err.
type fakeAdmission struct{ err error }

func (f fakeAdmission) Admit(context.Context, *store.Token, []ratelimit.Request) error { return f.err }

func (fakeAdmission) Reconcile(context.Context, []ratelimit.Request, int64) {}

// TestAdmissionRefusals maps each kind of admission answer to its response
// and its ratelimit_decisions_total sample.
func TestAdmissionRefusals(t *testing.T) {
	t.Parallel()
	maxRequests := int64(10)
	tok := &store.Token{ID: "t1", MaxRequests: &maxRequests}
	limits := []ratelimit.Request{{Key: "tok:t1:rpm", Limit: 1, Cost: 1}}
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
		samples    []string
	}{
		{"admitted", nil, 200, "", "",
			[]string{`decision="allowed",limit="rate"} 1`, `decision="allowed",limit="quota"} 1`}},
		{"rate limited", fmt.Errorf("admit: %w", &admission.LimitedError{Limit: "token requests per minute", RetryAfter: 1500 * time.Millisecond}),
			429, "rate_limited", "2", []string{`decision="limited",limit="rate"} 1`}},
		{"quota spent", fmt.Errorf("admit: consume quota: %w", store.ErrQuotaExceeded), 429, "insufficient_quota", "",
			[]string{`decision="limited",limit="quota"} 1`}},
		{"Redis away", fmt.Errorf("admit: %w: timeout", ratelimit.ErrUnavailable), 503, "rate_limiter_unavailable", "1", nil},
		{"database away", fmt.Errorf("admit: %w: timeout", quota.ErrUnavailable), 503, "quota_unavailable", "1", nil},
	} {
		s := New(Deps{Admission: fakeAdmission{tc.err}, Metrics: telemetry.NewMetrics()})
		s.e.GET("/admit", func(c echo.Context) error {
			if err := s.admit(c.Request().Context(), tok, limits); err != nil {
				return err
			}
			return c.NoContent(200)
		})
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/admit", nil))
		if rec.Code != tc.status || rec.Header().Get("Retry-After") != tc.retryAfter {
			t.Errorf("%s: %d Retry-After %q, want %d %q", tc.name, rec.Code, rec.Header().Get("Retry-After"), tc.status, tc.retryAfter)
		}
		if tc.code != "" && decodeError(t, rec).Code != tc.code {
			t.Errorf("%s: body %s, want code %s", tc.name, rec.Body.String(), tc.code)
		}
		m := httptest.NewRecorder()
		s.ServeHTTP(m, httptest.NewRequest("GET", "/metrics", nil))
		got := 0
		for line := range strings.SplitSeq(m.Body.String(), "\n") {
			if strings.HasPrefix(line, "ratelimit_decisions_total{") {
				got++
				if !slices.ContainsFunc(tc.samples, func(s string) bool { return strings.HasSuffix(line, s) }) {
					t.Errorf("%s: unexpected sample %s", tc.name, line)
				}
			}
		}
		if got != len(tc.samples) {
			t.Errorf("%s: %d decision samples, want %v", tc.name, got, tc.samples)
		}
	}
}
