package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// switchPinger is a database whose answer the test sets.
type switchPinger struct {
	mu  sync.Mutex
	err error
}

func (p *switchPinger) Ping(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *switchPinger) set(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

// hangingPinger is a database that never answers.
type hangingPinger struct{}

func (hangingPinger) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func fixedCheck(name, state string, r Readiness) ReadyCheck {
	return ReadyCheck{Name: name, Check: func(context.Context) (string, Readiness) { return state, r }}
}

// readyz calls /readyz on s and decodes its body.
func readyz(t *testing.T, s *Server) (int, map[string]string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body, err)
	}
	return rec.Code, body
}

func TestReadyzDegradesOnSharedOutagesAndFailsOnlyForLocalReasons(t *testing.T) {
	t.Parallel()
	down := errors.New("connection refused")
	redisOK := fixedCheck("redis", "ok", Ready)
	redisDown := fixedCheck("redis", "unreachable (fail-closed: rate-limited requests refused)", Degraded)
	schemaOK := fixedCheck("schema", "ok", Ready)
	schemaBehind := fixedCheck("schema", "behind: version 1, this build needs version 2", Unready)
	for _, tc := range []struct {
		name     string
		db       error
		checks   []ReadyCheck
		draining bool
		code     int
		body     map[string]string
	}{
		{"all well", nil, []ReadyCheck{schemaOK, redisOK}, false, http.StatusOK,
			map[string]string{"status": "ready", "database": "ok", "schema": "ok", "redis": "ok"}},
		{"database unreachable", down, []ReadyCheck{schemaOK, redisOK}, false, http.StatusOK,
			map[string]string{"status": "degraded", "database": "unreachable", "schema": "ok", "redis": "ok"}},
		{"redis unreachable", nil, []ReadyCheck{schemaOK, redisDown}, false, http.StatusOK,
			map[string]string{"status": "degraded", "database": "ok", "schema": "ok", "redis": "unreachable (fail-closed: rate-limited requests refused)"}},
		{"database and redis unreachable", down, []ReadyCheck{schemaOK, redisDown}, false, http.StatusOK,
			map[string]string{"status": "degraded", "database": "unreachable", "schema": "ok", "redis": "unreachable (fail-closed: rate-limited requests refused)"}},
		{"schema behind", nil, []ReadyCheck{schemaBehind, redisOK}, false, http.StatusServiceUnavailable,
			map[string]string{"status": "unavailable", "database": "ok", "schema": "behind: version 1, this build needs version 2", "redis": "ok"}},
		{"schema behind, database unreachable", down, []ReadyCheck{schemaBehind}, false, http.StatusServiceUnavailable,
			map[string]string{"status": "unavailable", "database": "unreachable", "schema": "behind: version 1, this build needs version 2"}},
		{"draining", nil, []ReadyCheck{schemaOK}, true, http.StatusServiceUnavailable,
			map[string]string{"status": "draining", "database": "ok", "schema": "ok"}},
		{"draining while degraded", down, []ReadyCheck{schemaOK}, true, http.StatusServiceUnavailable,
			map[string]string{"status": "draining", "database": "unreachable", "schema": "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Deps{Database: &switchPinger{err: tc.db}, Checks: tc.checks})
			if tc.draining {
				s.SetDraining()
			}
			code, body := readyz(t, s)
			if code != tc.code {
				t.Errorf("status %d, want %d", code, tc.code)
			}
			if diff := cmp.Diff(tc.body, body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadyzAnswersInTimeWhileTheDatabaseHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Deps{Database: hangingPinger{}, Checks: []ReadyCheck{fixedCheck("redis", "ok", Ready)}})
		start := time.Now()
		code, body := readyz(t, s)
		if took := time.Since(start); took > readyTimeout {
			t.Errorf("/readyz took %s with a hanging database, want at most %s", took, readyTimeout)
		}
		if code != http.StatusOK || body["status"] != "degraded" || body["database"] != "unreachable" || body["redis"] != "ok" {
			t.Errorf("/readyz = %d %v, want 200 degraded with the database unreachable", code, body)
		}
	})
}

func TestReadyzLogsAndExportsStateChanges(t *testing.T) {
	t.Parallel()
	db := &switchPinger{}
	var logs bytes.Buffer
	m := telemetry.NewMetrics()
	s := New(Deps{Database: db, Metrics: m, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	up := func() string {
		t.Helper()
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for line := range strings.Lines(rec.Body.String()) {
			if v, ok := strings.CutPrefix(line, `llm_dependency_up{dependency="database"} `); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no llm_dependency_up for the database:\n%s", rec.Body)
		return ""
	}
	for _, step := range []struct {
		err    error
		wantUp string
	}{{nil, "1"}, {errors.New("refused"), "0"}, {errors.New("refused"), "0"}, {nil, "1"}, {nil, "1"}} {
		db.set(step.err)
		readyz(t, s)
		if got := up(); got != step.wantUp {
			t.Errorf("database ping error %v: llm_dependency_up = %s, want %s", step.err, got, step.wantUp)
		}
	}
	var lines []string
	for line := range strings.Lines(logs.String()) {
		var rec struct {
			Level, Msg, Dependency, State string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		lines = append(lines, rec.Level+" "+rec.Msg+" "+rec.Dependency+" "+rec.State)
	}
	want := []string{
		"WARN dependency degraded: serving without it database unreachable",
		"INFO dependency recovered database ok",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("logs (-want +got), one line per change:\n%s", diff)
	}
}

// metricsEnv is a gateway on SQLite with one project, one token and a fake
// upstream, whose /metrics requires metricsToken when it is set.
type metricsEnv struct {
	srv       *Server
	projectID string
	secret    string
}

const secretProjectName = "Secret Team"

func newMetricsEnv(t *testing.T, metricsToken string) *metricsEnv {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(chatAnswer)
	}))
	t.Cleanup(up.Close)
	st := teststore.SQLite(t)
	cipher, err := secret.NewCipher(bytes.Repeat([]byte{1}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	mgr := manage.New(manage.Options{Store: st, Cipher: cipher})
	p, err := mgr.CreateProject(t.Context(), manage.CreateProjectInput{Name: secretProjectName, BaseURL: up.URL + "/v1", APIKey: "sk-upstream"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mgr.CreateToken(t.Context(), manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: new(60)})
	if err != nil {
		t.Fatal(err)
	}
	rec := usage.New(st, usage.Options{FlushInterval: 10 * time.Millisecond})
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rec.Run(runCtx) })
	fwd := proxy.New(proxy.Options{})
	t.Cleanup(func() {
		fwd.Close()
		stop()
		wg.Wait()
	})
	srv := New(Deps{
		Database: st, Auth: auth.New(st, cipher, auth.Options{TTL: time.Hour}), Failures: auth.NewFailureLimiter(st, rec, auth.FailureOptions{}),
		Admission: admission.NewSplit(ratelimit.NewMemory(), quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: rec}), nil),
		Forwarder: fwd, Recorder: rec, Manager: mgr, Metrics: telemetry.NewMetrics(),
		MetricsToken: metricsToken,
	})
	return &metricsEnv{srv: srv, projectID: p.ID, secret: tok.Secret}
}

func (e *metricsEnv) chat(t *testing.T) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.secret)
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("chat: %d %s", rec.Code, rec.Body)
	}
}

func (e *metricsEnv) metrics(authorization string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	return rec
}

func TestOpenMetricsNeverNameProjects(t *testing.T) {
	t.Parallel()
	e := newMetricsEnv(t, "")
	e.chat(t)
	rec := e.metrics("")
	body := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics = %d", rec.Code)
	}
	want := `llm_tokens_total{kind="prompt",model="gpt-4o-mini",project_id="` + e.projectID + `"} 120`
	if !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if strings.Contains(body, secretProjectName) || strings.Contains(body, "llm_project_info{") {
		t.Errorf("/metrics without METRICS_TOKEN names the project:\n%s", body)
	}
}

func TestMetricsTokenGuardsProjectNames(t *testing.T) {
	t.Parallel()
	const metricsToken = "metrics-token-for-tests-0123456789"
	e := newMetricsEnv(t, metricsToken)
	e.chat(t)
	for _, authorization := range []string{"", "Bearer wrong", "Bearer " + metricsToken[:10], "Basic " + metricsToken, "Bearer"} {
		rec := e.metrics(authorization)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", authorization, rec.Code)
			continue
		}
		if got := decodeError(t, rec); got.Type != "authentication_error" || got.Code != "invalid_metrics_token" {
			t.Errorf("Authorization %q: error %+v", authorization, got)
		}
		if rec.Header().Get("WWW-Authenticate") == "" || strings.Contains(rec.Body.String(), secretProjectName) {
			t.Errorf("Authorization %q: headers %v body %s", authorization, rec.Header(), rec.Body)
		}
	}
	rec := e.metrics("Bearer " + metricsToken)
	body := rec.Body.String()
	for _, want := range []string{
		`llm_project_info{name="` + secretProjectName + `",project_id="` + e.projectID + `"} 1`,
		`llm_tokens_total{kind="completion",model="gpt-4o-mini",project_id="` + e.projectID + `"} 210`,
	} {
		if rec.Code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics with the token: status %d, lacks %s", rec.Code, want)
		}
	}
}
