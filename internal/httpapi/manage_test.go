package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

const testManagementToken = "mgmt-token-for-tests-0123456789"

// manageEnv is a server on a real SQLite store with the real authenticator
// and usage recorder.
type manageEnv struct {
	t    *testing.T
	url  string
	st   store.Store
	auth *auth.Authenticator
	// audited receives a value after each audit batch the recorder writes.
	audited <-chan struct{}
}

// signalSink is the recorder's sink, signalling each audit batch written.
type signalSink struct {
	usage.Sink
	audited chan struct{}
}

func (s signalSink) InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error {
	err := s.Sink.InsertAuditEvents(ctx, events)
	select {
	case s.audited <- struct{}{}:
	default: // a signal is pending already
	}
	return err
}

func newManageEnv(t *testing.T, managementToken string) *manageEnv {
	t.Helper()
	st := teststore.SQLite(t)
	cipher, err := secret.NewCipher(bytes.Repeat([]byte{1}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	// A long TTL: only invalidation can make a cached token fail at once.
	authn := auth.New(st, cipher, auth.Options{TTL: time.Hour})
	sink := signalSink{Sink: st, audited: make(chan struct{}, 1)}
	rec := usage.New(sink, usage.Options{FlushInterval: 10 * time.Millisecond})
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := rec.Run(runCtx); err != nil {
			t.Errorf("recorder: %v", err)
		}
	})
	srv := New(Deps{
		Database:        st,
		Auth:            authn,
		Failures:        auth.NewFailureLimiter(st, rec, auth.FailureOptions{Limit: manageFailureLimit}),
		Recorder:        rec,
		Manager:         manage.New(manage.Options{Store: st, Cipher: cipher, Invalidator: authn, Auditor: rec}),
		ManagementToken: managementToken,
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		stop()
		wg.Wait() // the recorder's final flush, before teststore closes st
	})
	return &manageEnv{t: t, url: hs.URL, st: st, auth: authn, audited: sink.audited}
}

type response struct {
	status int
	header http.Header
	raw    string
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.raw), v); err != nil {
		t.Fatalf("decode %q: %v", r.raw, err)
	}
}

// do sends a management request with the test token.
func (e *manageEnv) do(method, path, body string) response {
	e.t.Helper()
	return e.doAuth(method, path, body, "Bearer "+testManagementToken)
}

func (e *manageEnv) doAuth(method, path, body, authorization string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, raw: string(raw)}
}

func (e *manageEnv) mustDo(method, path, body string, want int) response {
	e.t.Helper()
	r := e.do(method, path, body)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.raw)
	}
	return r
}

// auditEvents waits until the recorder has written at least n events
// matching f and returns them. It looks again after each audit batch
// written, and gives up when none comes for a while.
func (e *manageEnv) auditEvents(f store.AuditFilter, n int) []*store.AuditEvent {
	e.t.Helper()
	f.Page = store.Page{Page: 1, PageSize: 1000}
	for {
		evs, _, err := e.st.ListAuditEvents(e.t.Context(), f)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(evs) >= n {
			return evs
		}
		select {
		case <-e.audited:
		case <-time.After(5 * time.Second):
			e.t.Fatalf("audit events matching %+v: %d, want %d", f, len(evs), n)
		}
	}
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func TestManageDisabled(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, "")
	r := e.do(http.MethodGet, "/manage/projects", "")
	var body apiError
	r.decode(t, &body)
	if r.status != http.StatusNotFound || body.Error.Type != "invalid_request_error" || !strings.Contains(body.Error.Message, "MANAGEMENT_TOKEN") {
		t.Fatalf("disabled: %d %s", r.status, r.raw)
	}
}

// manageFailureLimit is the test server's AUTH_FAILURE_LIMIT: the
// failures of TestManageAuth's table.
const manageFailureLimit = 4

func TestManageAuth(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	tests := []struct {
		name, authorization string
	}{
		{"missing", ""},
		{"wrong", "Bearer wrong-token-presented"},
		{"prefix of the right one", "Bearer " + testManagementToken[:10]},
		{"basic scheme", "Basic " + testManagementToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.doAuth(http.MethodGet, "/manage/projects", "", tt.authorization)
			var body apiError
			r.decode(t, &body)
			if r.status != http.StatusUnauthorized || body.Error.Type != "authentication_error" {
				t.Fatalf("status %d, body %s; want 401 authentication_error", r.status, r.raw)
			}
		})
	}
	if len(tests) != manageFailureLimit {
		t.Fatalf("the table has %d failures, the limit is %d", len(tests), manageFailureLimit)
	}
	// Past the limit a wrong token is refused with 429; the right one
	// still works.
	r := e.doAuth(http.MethodGet, "/manage/projects", "", "Bearer wrong-again")
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Errorf("failure past the limit: status %d, Retry-After %q; want 429 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	e.mustDo(http.MethodGet, "/manage/projects", "", http.StatusOK)

	// The first failure is audited at once; the rest become one summary
	// row when the window ends.
	evs := e.auditEvents(store.AuditFilter{Action: "manage.auth"}, 1)
	for _, ev := range evs {
		if ev.Outcome != store.OutcomeDenied || ev.Method != http.MethodGet || ev.Path != "/manage/projects" ||
			ev.ClientIP == "" || ev.RequestID == "" || ev.Reason == "" {
			t.Errorf("denied event = %+v", ev)
		}
		js, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(js), "wrong-token-presented") || strings.Contains(string(js), testManagementToken[:10]) {
			t.Errorf("audit event holds the presented token: %s", js)
		}
	}
}

func TestManageProjects(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	const apiKey = "sk-live-upstream-key-abcdefgh"
	r := e.mustDo(http.MethodPost, "/manage/projects",
		`{"name":"alpha","api_key":"`+apiKey+`","rpm_limit":60}`, http.StatusCreated)
	if strings.Contains(r.raw, apiKey) || strings.Contains(r.raw, "upstream-key") {
		t.Fatalf("response contains the api key: %s", r.raw)
	}
	var p map[string]any
	r.decode(t, &p)
	for _, k := range []string{"id", "name", "provider", "base_url", "api_version", "api_key_masked", "is_active",
		"deactivated_at", "rpm_limit", "tpm_limit", "allowed_origins", "allowed_models", "cache_ttl_seconds",
		"created_at", "updated_at"} {
		if _, ok := p[k]; !ok {
			t.Errorf("project JSON lacks %q: %s", k, r.raw)
		}
	}
	if len(p) != 15 {
		t.Errorf("project JSON has %d fields, want 15: %s", len(p), r.raw)
	}
	if p["provider"] != "openai" || p["base_url"] != proxy.DefaultBaseURL(store.ProviderOpenAI) || p["api_key_masked"] != "sk-...efgh" ||
		p["is_active"] != true || p["rpm_limit"] != float64(60) {
		t.Fatalf("project = %s", r.raw)
	}
	id := p["id"].(string)

	r = e.mustDo(http.MethodGet, "/manage/projects/"+id, "", http.StatusOK)
	if strings.Contains(r.raw, apiKey) || !strings.Contains(r.raw, `"name":"alpha"`) {
		t.Fatalf("GET project: %s", r.raw)
	}
	e.mustDo(http.MethodGet, "/manage/projects/00000000-0000-0000-0000-000000000000", "", http.StatusNotFound)
	e.mustDo(http.MethodPost, "/manage/projects", `{"name":"alpha","api_key":"k"}`, http.StatusConflict)
	e.mustDo(http.MethodDelete, "/manage/projects/"+id, "", http.StatusMethodNotAllowed)

	r = e.mustDo(http.MethodPatch, "/manage/projects/"+id, `{"api_key":"sk-rotated-key-zzzz9999","name":"alpha2"}`, http.StatusOK)
	if strings.Contains(r.raw, "rotated-key") || !strings.Contains(r.raw, `"api_key_masked":"sk-...9999"`) || !strings.Contains(r.raw, `"name":"alpha2"`) {
		t.Fatalf("PATCH project: %s", r.raw)
	}

	for _, n := range []string{"beta", "gamma"} {
		e.mustDo(http.MethodPost, "/manage/projects", `{"name":"`+n+`","provider":"anthropic","api_key":"sk-ant-0123456789"}`, http.StatusCreated)
	}
	var list struct {
		Data       []manage.ProjectView `json:"data"`
		Pagination struct {
			Page, PageSize, Total int
		} `json:"pagination"`
	}
	r = e.mustDo(http.MethodGet, "/manage/projects?page=2&page_size=2", "", http.StatusOK)
	r.decode(t, &list)
	if len(list.Data) != 1 || list.Pagination.Page != 2 || list.Pagination.Total != 3 || !strings.Contains(r.raw, `"page_size":2`) {
		t.Fatalf("page 2: %s", r.raw)
	}
	r = e.mustDo(http.MethodGet, "/manage/projects", "", http.StatusOK)
	if !strings.Contains(r.raw, `"pagination":{"page":1,"page_size":50,"total":3}`) || strings.Contains(r.raw, apiKey) {
		t.Fatalf("list: %s", r.raw)
	}
}

func TestManageValidation(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	var p manage.ProjectView
	e.mustDo(http.MethodPost, "/manage/projects", `{"name":"p","api_key":"sk-0123456789abc"}`, http.StatusCreated).decode(t, &p)
	tests := []struct {
		name, method, path, body string
		param                    string // "" means no param
	}{
		{"bad provider", "POST", "/manage/projects", `{"name":"x","provider":"cohere","api_key":"k"}`, "provider"},
		{"unknown field", "POST", "/manage/projects", `{"name":"x","api_key":"k","colour":"red"}`, "colour"},
		{"malformed JSON", "POST", "/manage/projects", `{"name":"x",`, ""},
		{"syntax error", "POST", "/manage/projects", `{"name" "x"}`, ""},
		{"wrong type", "POST", "/manage/projects", `{"name":"x","api_key":"k","rpm_limit":"many"}`, "rpm_limit"},
		{"not an object", "POST", "/manage/projects", `["x"]`, ""},
		{"two objects", "POST", "/manage/projects", `{"name":"x","api_key":"k"}{}`, ""},
		{"empty body", "POST", "/manage/projects", ``, ""},
		{"missing api_key", "POST", "/manage/projects", `{"name":"x"}`, "api_key"},
		{"relative base_url", "PATCH", "/manage/projects/" + p.ID, `{"base_url":"example.com"}`, "base_url"},
		{"malformed origin", "POST", "/manage/projects", `{"name":"x","api_key":"k","allowed_origins":["https://a.example/path"]}`, "allowed_origins"},
		{"origins not a list", "PATCH", "/manage/projects/" + p.ID, `{"allowed_origins":"https://a.example"}`, "allowed_origins"},
		{"malformed model pattern", "PATCH", "/manage/projects/" + p.ID, `{"allowed_models":["gpt 4"]}`, "allowed_models"},
		{"bad cache ttl", "PATCH", "/manage/projects/" + p.ID, `{"cache_ttl_seconds":-5}`, "cache_ttl_seconds"},
		{"malformed token model pattern", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":5,"allowed_models":[""]}`, "allowed_models"},
		{"zero duration", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":0}`, "duration_minutes"},
		{"huge duration", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":99999999999}`, "duration_minutes"},
		{"fractional duration", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":1.5}`, "duration_minutes"},
		{"no lifetime", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `"}`, "duration_minutes"},
		{"bad expires_at", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","expires_at":"tomorrow"}`, "expires_at"},
		{"negative max_requests", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":5,"max_requests":-3}`, "max_requests"},
		{"unknown project", "POST", "/manage/tokens", `{"project_id":"nope","duration_minutes":5}`, "project_id"},
		{"page zero", "GET", "/manage/tokens?page=0", ``, "page"},
		{"page not a number", "GET", "/manage/tokens?page=x", ``, "page"},
		{"page_size too big", "GET", "/manage/projects?page_size=1001", ``, "page_size"},
		{"bad active", "GET", "/manage/tokens?active=maybe", ``, "active"},
		{"bad group_by", "GET", "/manage/usage?group_by=week", ``, "group_by"},
		{"bad from", "GET", "/manage/usage?from=yesterday", ``, "from"},
		{"bad outcome", "GET", "/manage/audit?outcome=meh", ``, "outcome"},
		{"name with a newline", "POST", "/manage/projects", `{"name":"a\nb","api_key":"k"}`, "name"},
		{"name with a trailing newline", "POST", "/manage/projects", `{"name":"ab\n","api_key":"k"}`, "name"},
		{"name with a bidi override", "PATCH", "/manage/projects/" + p.ID, `{"name":"invoice\u202egpj.exe"}`, "name"},
		{"name with NUL", "POST", "/manage/projects", `{"name":"a\u0000b","api_key":"k"}`, "name"},
		{"label with a C1 control", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":5,"label":"a\u009bb"}`, "label"},
		{"label with an isolate", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":5,"label":"a\u2067b"}`, "label"},
		{"largest page", "GET", "/manage/projects?page=9223372036854775807", ``, "page"},
		{"page beyond int64", "GET", "/manage/projects?page=9223372036854775808", ``, "page"},
		{"page past the offset bound", "GET", "/manage/audit?page=10002&page_size=1000", ``, "page"},
		{"negative page", "GET", "/manage/tokens?page=-1", ``, "page"},
		{"negative page_size", "GET", "/manage/tokens?page_size=-5", ``, "page_size"},
		{"unknown audit filter", "GET", "/manage/audit?outcome=success&actor=management", ``, "actor"},
		{"misspelt token filter", "GET", "/manage/tokens?projectid=" + p.ID, ``, "projectid"},
		{"unknown usage parameter", "GET", "/manage/usage?groupby=day", ``, "groupby"},
		{"unknown project list parameter", "GET", "/manage/projects?name=p", ``, "name"},
		{"repeated audit filter", "GET", "/manage/audit?outcome=success&outcome=failure", ``, "outcome"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.body)
			var body apiError
			r.decode(t, &body)
			if r.status != http.StatusBadRequest || body.Error.Type != "invalid_request_error" || body.Error.Message == "" {
				t.Fatalf("status %d body %s; want 400 invalid_request_error", r.status, r.raw)
			}
			got := ""
			if body.Error.Param != nil {
				got = *body.Error.Param
			}
			if got != tt.param {
				t.Fatalf("param = %q, want %q (body %s)", got, tt.param, r.raw)
			}
		})
	}
	evs := e.auditEvents(store.AuditFilter{Action: "project.create", Outcome: store.OutcomeFailure}, 9)
	for _, ev := range evs {
		if ev.Reason == "" {
			t.Errorf("failure without reason: %+v", ev)
		}
	}
}

func TestManageTokenLifecycle(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	ctx := t.Context()
	var p manage.ProjectView
	e.mustDo(http.MethodPost, "/manage/projects", `{"name":"p","api_key":"sk-0123456789abc"}`, http.StatusCreated).decode(t, &p)

	r := e.mustDo(http.MethodPost, "/manage/tokens",
		`{"project_id":"`+p.ID+`","duration_minutes":60,"max_requests":null,"rpm_limit":5,"label":"ci"}`, http.StatusCreated)
	var created map[string]any
	r.decode(t, &created)
	want := []string{"id", "token", "prefix", "project_id", "expires_at", "max_requests", "rpm_limit", "tpm_limit", "label",
		"allowed_models"}
	for _, k := range want {
		if _, ok := created[k]; !ok {
			t.Errorf("created token lacks %q: %s", k, r.raw)
		}
	}
	if len(created) != len(want) || created["max_requests"] != nil || created["label"] != "ci" || created["project_id"] != p.ID {
		t.Fatalf("created token = %s", r.raw)
	}
	id, secretTok := created["id"].(string), created["token"].(string)
	if !strings.HasPrefix(secretTok, created["prefix"].(string)) {
		t.Fatalf("prefix %v is not a prefix of the token", created["prefix"])
	}
	expires, err := time.Parse(time.RFC3339Nano, created["expires_at"].(string))
	if err != nil || expires.Sub(time.Now()) < 59*time.Minute || expires.Sub(time.Now()) > 61*time.Minute {
		t.Fatalf("expires_at = %v (%v), want about an hour ahead", created["expires_at"], err)
	}

	hash := auth.Hash(secretTok)
	for _, path := range []string{"/manage/tokens/" + id, "/manage/tokens?project_id=" + p.ID, "/manage/tokens"} {
		r := e.mustDo(http.MethodGet, path, "", http.StatusOK)
		if strings.Contains(r.raw, secretTok) || strings.Contains(r.raw, hash) || !strings.Contains(r.raw, id) {
			t.Fatalf("GET %s shows the secret or hash, or lacks the token: %s", path, r.raw)
		}
	}

	if _, err := e.auth.Authenticate(ctx, secretTok); err != nil {
		t.Fatalf("Authenticate new token: %v", err)
	}
	e.mustDo(http.MethodPatch, "/manage/projects/"+p.ID, `{"is_active":false}`, http.StatusOK)
	if _, err := e.auth.Authenticate(ctx, secretTok); !errors.Is(err, auth.ErrProjectInactive) {
		t.Fatalf("after deactivating the project: err = %v, want ErrProjectInactive", err)
	}
	var proj manage.ProjectView
	e.mustDo(http.MethodGet, "/manage/projects/"+p.ID, "", http.StatusOK).decode(t, &proj)
	if proj.IsActive || proj.DeactivatedAt == nil {
		t.Fatalf("deactivated project = %+v", proj)
	}
	e.mustDo(http.MethodPost, "/manage/tokens", `{"project_id":"`+p.ID+`","duration_minutes":5}`, http.StatusBadRequest)
	e.mustDo(http.MethodPatch, "/manage/projects/"+p.ID, `{"is_active":true}`, http.StatusOK)
	if _, err := e.auth.Authenticate(ctx, secretTok); err != nil {
		t.Fatalf("after reactivating: %v", err)
	}

	var tok manage.TokenView
	e.mustDo(http.MethodPatch, "/manage/tokens/"+id, `{"max_requests":10,"tpm_limit":1000,"label":"renamed"}`, http.StatusOK).decode(t, &tok)
	if tok.MaxRequests == nil || *tok.MaxRequests != 10 || tok.TPMLimit != 1000 || tok.Label != "renamed" || tok.RPMLimit != 5 {
		t.Fatalf("PATCH token = %+v", tok)
	}
	r = e.mustDo(http.MethodPatch, "/manage/tokens/"+id, `{"max_requests":null}`, http.StatusOK)
	if !strings.Contains(r.raw, `"max_requests":null`) {
		t.Fatalf("max_requests null did not make the token unlimited: %s", r.raw)
	}
	r = e.do(http.MethodPatch, "/manage/tokens/"+id, `{"max_requests":"ten"}`)
	if r.status != http.StatusBadRequest || !strings.Contains(r.raw, `"param":"max_requests"`) {
		t.Fatalf("bad max_requests: %d %s", r.status, r.raw)
	}

	for range 2 {
		r := e.mustDo(http.MethodDelete, "/manage/tokens/"+id, "", http.StatusNoContent)
		if r.raw != "" {
			t.Fatalf("204 with a body: %q", r.raw)
		}
		if _, err := e.auth.Authenticate(ctx, secretTok); !errors.Is(err, auth.ErrRevoked) {
			t.Fatalf("after DELETE: err = %v, want ErrRevoked", err)
		}
	}
	r = e.do(http.MethodPatch, "/manage/tokens/"+id, `{"is_active":true}`)
	var conflict apiError
	r.decode(t, &conflict)
	if r.status != http.StatusConflict || conflict.Error.Code != "token_revoked" || conflict.Error.Param == nil || *conflict.Error.Param != "is_active" {
		t.Fatalf("PATCH is_active=true on a revoked token: %d %s; want 409 token_revoked", r.status, r.raw)
	}
	if _, err := e.auth.Authenticate(ctx, secretTok); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("after the refused reactivation: err = %v, want ErrRevoked", err)
	}
	e.mustDo(http.MethodDelete, "/manage/tokens/00000000-0000-0000-0000-000000000000", "", http.StatusNotFound)
	e.mustDo(http.MethodGet, "/manage/tokens?active=false", "", http.StatusOK).decode(t, &struct{}{})

	// Project-wide revocation.
	var second map[string]any
	e.mustDo(http.MethodPost, "/manage/tokens", `{"project_id":"`+p.ID+`","expires_at":"`+
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`, http.StatusCreated).decode(t, &second)
	if _, err := e.auth.Authenticate(ctx, second["token"].(string)); err != nil {
		t.Fatal(err)
	}
	r = e.mustDo(http.MethodPost, "/manage/projects/"+p.ID+"/tokens/revoke", "", http.StatusOK)
	if !strings.Contains(r.raw, `"revoked":1`) {
		t.Fatalf("revoke project tokens: %s", r.raw)
	}
	if _, err := e.auth.Authenticate(ctx, second["token"].(string)); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("after project-wide revoke: err = %v, want ErrRevoked", err)
	}

	if ev := e.auditEvents(store.AuditFilter{Action: "token.update", Outcome: store.OutcomeFailure, TokenID: id}, 1); ev[0].Reason == "" {
		t.Errorf("refused reactivation audited without a reason: %+v", ev[0])
	}
	evs := e.auditEvents(store.AuditFilter{Action: "token.revoke", TokenID: id}, 2)
	for _, ev := range evs {
		if ev.Actor != "management" || ev.Outcome != store.OutcomeSuccess || ev.ProjectID != p.ID || ev.Method != http.MethodDelete {
			t.Errorf("revoke event = %+v", ev)
		}
	}
}

func TestManageUsage(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	var p manage.ProjectView
	e.mustDo(http.MethodPost, "/manage/projects", `{"name":"p","api_key":"sk-0123456789abc"}`, http.StatusCreated).decode(t, &p)
	day := time.Date(2030, 3, 4, 10, 0, 0, 0, time.UTC)
	err := e.st.InsertUsage(t.Context(), []store.Usage{
		{ID: "00000000-0000-0000-0000-0000000000a1", CreatedAt: day, RequestID: "a", ProjectID: p.ID, Model: "m", Endpoint: "/v1/chat/completions", Status: 200, PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3},
		{ID: "00000000-0000-0000-0000-0000000000a2", CreatedAt: day.Add(24 * time.Hour), RequestID: "b", ProjectID: p.ID, Model: "m", Endpoint: "/v1/chat/completions", Status: 200, PromptTokens: 4, CompletionTokens: 5, TotalTokens: 9, Cached: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.mustDo(http.MethodGet, "/manage/usage?project_id="+p.ID+"&group_by=day&from=2030-03-01&to=2030-03-04", "", http.StatusOK)
	var got manage.UsageView
	r.decode(t, &got)
	if got.GroupBy == nil || *got.GroupBy != "day" || got.From == nil || got.To == nil || !got.To.Equal(time.Date(2030, 3, 5, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("usage window: %s", r.raw)
	}
	want := []manage.UsageRowView{{Key: "2030-03-04", Requests: 1, PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}}
	if len(got.Data) != 1 || got.Data[0] != want[0] {
		t.Fatalf("usage data = %+v, want %+v", got.Data, want)
	}
	r = e.mustDo(http.MethodGet, "/manage/usage", "", http.StatusOK)
	if !strings.Contains(r.raw, `"group_by":null`) || !strings.Contains(r.raw, `"total_tokens":12`) {
		t.Fatalf("usage total: %s", r.raw)
	}
	r = e.mustDo(http.MethodGet, "/manage/usage?group_by=cache", "", http.StatusOK)
	r.decode(t, &got)
	want = []manage.UsageRowView{{Key: "hit", Requests: 1, PromptTokens: 4, CompletionTokens: 5, TotalTokens: 9},
		{Key: "miss", Requests: 1, PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}}
	if !slices.Equal(got.Data, want) {
		t.Fatalf("usage by cache = %+v, want %+v", got.Data, want)
	}
}

func TestManageAuditTrail(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	var p manage.ProjectView
	calls := []struct {
		method, path, body string
		status             int
		action, outcome    string
	}{
		{"POST", "/manage/projects", `{"name":"p","api_key":"sk-0123456789abc"}`, 201, "project.create", "success"},
		{"GET", "/manage/projects", "", 200, "project.list", "success"},
		{"GET", "/manage/projects/00000000-0000-0000-0000-000000000000", "", 404, "project.get", "failure"},
		{"GET", "/manage/tokens", "", 200, "token.list", "success"},
		{"GET", "/manage/usage", "", 200, "usage.query", "success"},
	}
	reqIDs := map[string]string{}
	for i, c := range calls {
		r := e.mustDo(c.method, c.path, c.body, c.status)
		if i == 0 {
			r.decode(t, &p)
		}
		reqIDs[r.header.Get("X-Request-ID")] = c.action
	}
	evs := e.auditEvents(store.AuditFilter{}, len(calls))
	seen := map[string]bool{}
	for _, ev := range evs {
		action, ok := reqIDs[ev.RequestID]
		if !ok {
			continue
		}
		seen[ev.RequestID] = true
		if ev.Action != action || ev.Actor != "management" || ev.ClientIP == "" {
			t.Errorf("event for %s = %+v", action, ev)
		}
	}
	if len(seen) != len(calls) {
		t.Fatalf("audit events for %d of %d calls", len(seen), len(calls))
	}
	for _, c := range calls {
		n := 0
		for _, ev := range evs {
			if ev.Action == c.action && ev.Outcome == c.outcome {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s/%s events: %d, want 1", c.action, c.outcome, n)
		}
	}

	var list manage.ListView[manage.AuditView]
	e.mustDo(http.MethodGet, "/manage/audit?action=project.create&page_size=10", "", http.StatusOK).decode(t, &list)
	if len(list.Data) != 1 || list.Data[0].ProjectID == nil || *list.Data[0].ProjectID != p.ID || list.Pagination.Total != 1 {
		t.Fatalf("audit list = %+v", list)
	}
	var one manage.AuditView
	e.mustDo(http.MethodGet, "/manage/audit/"+list.Data[0].ID, "", http.StatusOK).decode(t, &one)
	if one.Action != "project.create" || one.Method != "POST" || one.Path != "/manage/projects" {
		t.Fatalf("audit event = %+v", one)
	}
	e.auditEvents(store.AuditFilter{Action: "audit.list"}, 1)
	e.auditEvents(store.AuditFilter{Action: "audit.get"}, 1)
}

func TestManageDeactivatedTokenCannotBeReactivated(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	var p manage.ProjectView
	e.mustDo(http.MethodPost, "/manage/projects", `{"name":"p","api_key":"sk-0123456789abc"}`, http.StatusCreated).decode(t, &p)
	var tok manage.CreatedTokenView
	e.mustDo(http.MethodPost, "/manage/tokens", `{"project_id":"`+p.ID+`","duration_minutes":5}`, http.StatusCreated).decode(t, &tok)
	e.mustDo(http.MethodPatch, "/manage/tokens/"+tok.ID, `{"is_active":false}`, http.StatusOK)
	e.mustDo(http.MethodPatch, "/manage/tokens/"+tok.ID, `{"is_active":true}`, http.StatusConflict)
	var got manage.TokenView
	e.mustDo(http.MethodGet, "/manage/tokens/"+tok.ID, "", http.StatusOK).decode(t, &got)
	if got.IsActive {
		t.Fatal("the token is active again")
	}
}

func TestManageUnknownQueryParametersAreNamed(t *testing.T) {
	t.Parallel()
	e := newManageEnv(t, testManagementToken)
	r := e.do(http.MethodGet, "/manage/audit?outcome=denied&colour=red&actor=x&page=1", "")
	var body apiError
	r.decode(t, &body)
	if r.status != http.StatusBadRequest || body.Error.Param == nil || *body.Error.Param != "actor" ||
		!strings.Contains(body.Error.Message, `"actor", "colour"`) || !strings.Contains(body.Error.Message, "outcome") {
		t.Fatalf("status %d body %s; want 400 naming actor and colour and listing the accepted filters", r.status, r.raw)
	}
	for _, path := range []string{
		"/manage/audit?action=project.create&outcome=success&project_id=x&token_id=y&from=2030-01-01&to=2030-01-02&page=1&page_size=5",
		"/manage/tokens?project_id=x&active=true&page=1&page_size=5",
		"/manage/projects?active=false&page=1&page_size=5",
		"/manage/usage?project_id=x&token_id=y&from=2030-01-01&to=2030-01-02&group_by=day",
	} {
		e.mustDo(http.MethodGet, path, "", http.StatusOK)
	}
}
