package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/invalidate"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/policy"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// policyEnv is a whole gateway in process on SQLite with a fake upstream
// that records what reaches it, for the browser-app and cost-control
// policies (SPEC §6.7).
type policyEnv struct {
	t   *testing.T
	srv *Server
	st  store.Store
	mgr *manage.Service
	up  *httptest.Server

	// deps are the server's collaborators, for a second server on them.
	deps Deps
	// usage receives every usage row the recorder writes.
	usage chan store.Usage

	mu       sync.Mutex
	upPaths  []string // method and path of every upstream request
	upBodies []string // and its body, checked against its Content-Length
	// answer writes the upstream's answer; nil means a chat completion.
	answer func(w http.ResponseWriter, r *http.Request)
}

// usageSink passes the recorder's usage rows to the test as well.
type usageSink struct {
	usage.Sink
	rows chan<- store.Usage
}

func (s usageSink) InsertUsage(ctx context.Context, rows []store.Usage) error {
	for _, r := range rows {
		select {
		case s.rows <- r:
		default: // the test does not read them
		}
	}
	return s.Sink.InsertUsage(ctx, rows)
}

// newPolicyEnv starts the gateway on SQLite; opts adjust its Deps.
func newPolicyEnv(t *testing.T, opts ...func(*Deps)) *policyEnv {
	t.Helper()
	return newPolicyEnvOn(t, teststore.SQLite(t), opts...)
}

// newPolicyEnvOn starts the gateway on st; opts adjust its Deps.
func newPolicyEnvOn(t *testing.T, st store.Store, opts ...func(*Deps)) *policyEnv {
	t.Helper()
	e := &policyEnv{t: t, st: st, usage: make(chan store.Usage, 100)}
	e.up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.ContentLength >= 0 && r.ContentLength != int64(len(body)) {
			t.Errorf("upstream got Content-Length %d with a %d-byte body", r.ContentLength, len(body))
		}
		e.mu.Lock()
		e.upPaths = append(e.upPaths, r.Method+" "+r.URL.Path)
		e.upBodies = append(e.upBodies, string(body))
		answer := e.answer
		e.mu.Unlock()
		if answer != nil {
			answer(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(chatAnswer)
	}))
	t.Cleanup(e.up.Close)
	cipher, err := secret.NewCipher(bytes.Repeat([]byte{1}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	authn := auth.New(e.st, cipher, auth.Options{TTL: time.Hour})
	rec := usage.New(usageSink{Sink: e.st, rows: e.usage}, usage.Options{FlushInterval: 10 * time.Millisecond})
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rec.Run(runCtx) })
	fwd := proxy.New(proxy.Options{})
	// Long TTLs: only invalidation can make a change take effect at once.
	origins := policy.NewOrigins(e.st, policy.OriginsOptions{TTL: time.Hour})
	e.mgr = manage.New(manage.Options{Store: e.st, Cipher: cipher, Invalidator: invalidate.Targets{authn, origins}})
	e.deps = Deps{
		Database: e.st, Auth: authn, Failures: auth.NewFailureLimiter(e.st, rec, auth.FailureOptions{}), Origins: origins,
		Admission: admission.NewSplit(ratelimit.NewMemory(), quota.NewMemory(quota.MemoryOptions{Store: e.st, Toucher: rec}), nil),
		Forwarder: fwd, Recorder: rec, Manager: e.mgr, MaxRequestBytes: 1 << 20,
	}
	for _, o := range opts {
		o(&e.deps)
	}
	e.srv = New(e.deps)
	t.Cleanup(func() {
		fwd.Close()
		stop()
		wg.Wait()
	})
	return e
}

// project creates a project on the fake upstream.
func (e *policyEnv) project(in manage.CreateProjectInput) *store.Project {
	e.t.Helper()
	if in.Name == "" {
		in.Name = "p-" + strings.ReplaceAll(e.t.Name(), "/", "-")
	}
	in.APIKey = "sk-upstream-key"
	if in.BaseURL == "" {
		in.BaseURL = e.up.URL
	}
	p, err := e.mgr.CreateProject(e.t.Context(), in)
	if err != nil {
		e.t.Fatalf("CreateProject: %v", err)
	}
	return p
}

// token issues a token of project p and returns its secret.
func (e *policyEnv) token(p *store.Project, models ...string) string {
	e.t.Helper()
	ct, err := e.mgr.CreateToken(e.t.Context(), manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: new(60), AllowedModels: models})
	if err != nil {
		e.t.Fatalf("CreateToken: %v", err)
	}
	return ct.Secret
}

// do sends one request through the gateway; header holds extra headers.
func (e *policyEnv) do(method, path, secret, body string, header ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, req)
	return w
}

// setAnswer makes the upstream answer with status and body (JSON).
func (e *policyEnv) setAnswer(status int, body string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.answer = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// upstreamCalls returns and forgets what reached the upstream.
func (e *policyEnv) upstreamCalls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	calls := e.upPaths
	e.upPaths, e.upBodies = nil, nil
	return calls
}

// upstreamBodies returns and forgets the bodies that reached the upstream.
func (e *policyEnv) upstreamBodies() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	bodies := e.upBodies
	e.upPaths, e.upBodies = nil, nil
	return bodies
}

func chat(model string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	return string(b)
}
