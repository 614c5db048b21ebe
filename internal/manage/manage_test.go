package manage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
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
)

// recorder remembers what the Service told its cache and audit trail.
type recorder struct {
	mu       sync.Mutex
	tokens   []string
	projects []string
	events   []store.AuditEvent
}

func (r *recorder) InvalidateToken(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens, id)
}

func (r *recorder) InvalidateProject(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.projects = append(r.projects, id)
}

func (r *recorder) Audit(ev store.AuditEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

type env struct {
	svc    *manage.Service
	st     store.Store
	cipher *secret.Cipher
	rec    *recorder
	now    time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := teststore.SQLite(t)
	c, err := secret.NewCipher(bytes.Repeat([]byte{7}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, cipher: c, rec: &recorder{}, now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	e.svc = manage.New(manage.Options{Store: st, Cipher: c, Invalidator: e.rec, Auditor: e.rec,
		Now: func() time.Time { return e.now }})
	return e
}

func (e *env) project(t *testing.T, name string) *store.Project {
	t.Helper()
	p, err := e.svc.CreateProject(t.Context(), manage.CreateProjectInput{Name: name, APIKey: "sk-upstream-secret-1234"})
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	return p
}

func (e *env) token(t *testing.T, projectID string) *manage.CreatedToken {
	t.Helper()
	ct, err := e.svc.CreateToken(t.Context(), manage.CreateTokenInput{ProjectID: projectID, DurationMinutes: ptr(60)})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return ct
}

func ptr[T any](v T) *T { return &v }

func wantField(t *testing.T, err error, field string) {
	t.Helper()
	var ve *manage.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValidationError for %s", err, field)
	}
	if ve.Field != field {
		t.Fatalf("field = %q (%v), want %q", ve.Field, ve, field)
	}
}

func TestCreateProjectValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ok := manage.CreateProjectInput{Name: "p", APIKey: "sk-upstream-secret-1234"}
	tests := []struct {
		name  string
		edit  func(*manage.CreateProjectInput)
		field string
	}{
		{"empty name", func(in *manage.CreateProjectInput) { in.Name = "   " }, "name"},
		{"long name", func(in *manage.CreateProjectInput) { in.Name = strings.Repeat("n", 101) }, "name"},
		{"bad provider", func(in *manage.CreateProjectInput) { in.Provider = "cohere" }, "provider"},
		{"azure without base_url", func(in *manage.CreateProjectInput) { in.Provider = "azure" }, "base_url"},
		{"relative base_url", func(in *manage.CreateProjectInput) { in.BaseURL = "api.openai.com/v1" }, "base_url"},
		{"ftp base_url", func(in *manage.CreateProjectInput) { in.BaseURL = "ftp://example.com" }, "base_url"},
		{"credentials in base_url", func(in *manage.CreateProjectInput) { in.BaseURL = "https://u:p@example.com" }, "base_url"},
		{"api_version on openai", func(in *manage.CreateProjectInput) { in.APIVersion = "2024-10-21" }, "api_version"},
		{"missing api_key", func(in *manage.CreateProjectInput) { in.APIKey = " " }, "api_key"},
		{"negative rpm", func(in *manage.CreateProjectInput) { in.RPMLimit = -1 }, "rpm_limit"},
		{"negative tpm", func(in *manage.CreateProjectInput) { in.TPMLimit = -1 }, "tpm_limit"},
		{"tpm beyond 32 bits", func(in *manage.CreateProjectInput) { in.TPMLimit = 1 << 31 }, "tpm_limit"},
		{"origin with a path", func(in *manage.CreateProjectInput) { in.AllowedOrigins = []string{"https://app.example.com/"} }, "allowed_origins"},
		{"origin without scheme", func(in *manage.CreateProjectInput) { in.AllowedOrigins = []string{"app.example.com"} }, "allowed_origins"},
		{"origin with credentials", func(in *manage.CreateProjectInput) { in.AllowedOrigins = []string{"https://u@app.example.com"} }, "allowed_origins"},
		{"origin with a bad port", func(in *manage.CreateProjectInput) { in.AllowedOrigins = []string{"https://a.example:99999"} }, "allowed_origins"},
		{"file origin", func(in *manage.CreateProjectInput) { in.AllowedOrigins = []string{"file://x"} }, "allowed_origins"},
		{"empty model pattern", func(in *manage.CreateProjectInput) { in.AllowedModels = []string{"gpt-4o", ""} }, "allowed_models"},
		{"model pattern with a space", func(in *manage.CreateProjectInput) { in.AllowedModels = []string{"gpt 4"} }, "allowed_models"},
		{"too many model patterns", func(in *manage.CreateProjectInput) { in.AllowedModels = make([]string, 101) }, "allowed_models"},
		{"negative cache ttl", func(in *manage.CreateProjectInput) { in.CacheTTLSeconds = -1 }, "cache_ttl_seconds"},
		{"cache ttl over a day", func(in *manage.CreateProjectInput) { in.CacheTTLSeconds = 86401 }, "cache_ttl_seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := ok
			tt.edit(&in)
			_, err := e.svc.CreateProject(t.Context(), in)
			wantField(t, err, tt.field)
		})
	}
	l, err := e.svc.ListProjects(t.Context(), manage.ProjectQuery{})
	if err != nil || l.Total != 0 {
		t.Fatalf("after rejected creates: total %v, err %v; want 0 projects", l, err)
	}
}

func TestCreateProjectDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		in                  manage.CreateProjectInput
		provider, url, vers string
	}{
		{manage.CreateProjectInput{Name: " openai "}, "openai", proxy.DefaultBaseURL(store.ProviderOpenAI), ""},
		{manage.CreateProjectInput{Name: "anthropic", Provider: "Anthropic"}, "anthropic", proxy.DefaultBaseURL(store.ProviderAnthropic), ""},
		{manage.CreateProjectInput{Name: "azure", Provider: "azure", BaseURL: "https://x.openai.azure.com/"}, "azure", "https://x.openai.azure.com", proxy.DefaultAPIVersion},
		{manage.CreateProjectInput{Name: "azure2", Provider: "azure", BaseURL: "https://y.openai.azure.com", APIVersion: "2025-01-01"}, "azure", "https://y.openai.azure.com", "2025-01-01"},
	}
	for _, tt := range tests {
		t.Run(tt.in.Name, func(t *testing.T) {
			tt.in.APIKey = "sk-upstream-secret-1234"
			p, err := e.svc.CreateProject(t.Context(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.st.GetProject(t.Context(), p.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != strings.TrimSpace(tt.in.Name) || got.Provider != tt.provider || got.BaseURL != tt.url || got.APIVersion != tt.vers || !got.IsActive {
				t.Fatalf("stored %+v; want provider %s, base_url %s, api_version %q", got, tt.provider, tt.url, tt.vers)
			}
			if got.APIKeyHint != "sk-...1234" {
				t.Errorf("hint = %q", got.APIKeyHint)
			}
			if bytes.Contains(got.APIKeyEncrypted, []byte("upstream-secret")) {
				t.Error("api key stored in clear")
			}
			plain, err := e.cipher.Decrypt(got.APIKeyEncrypted)
			if err != nil || string(plain) != "sk-upstream-secret-1234" {
				t.Errorf("decrypt = %q, %v", plain, err)
			}
		})
	}
	_, err := e.svc.CreateProject(t.Context(), manage.CreateProjectInput{Name: "openai", APIKey: "k"})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: err = %v, want ErrConflict", err)
	}
}

func TestUpdateProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	tok := e.token(t, p.ID)

	if _, err := e.svc.UpdateProject(ctx, p.ID, manage.UpdateProjectInput{RPMLimit: ptr(-5)}); err == nil {
		t.Fatal("negative rpm_limit accepted")
	} else {
		wantField(t, err, "rpm_limit")
	}
	if _, err := e.svc.UpdateProject(ctx, "nope", manage.UpdateProjectInput{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown project: err = %v", err)
	}

	e.now = e.now.Add(time.Minute)
	got, err := e.svc.UpdateProject(ctx, p.ID, manage.UpdateProjectInput{IsActive: ptr(false), Name: ptr("renamed"),
		APIKey: ptr("sk-another-key-9876"), TPMLimit: ptr(100)})
	if err != nil {
		t.Fatal(err)
	}
	if got.IsActive || got.DeactivatedAt == nil || !got.DeactivatedAt.Equal(e.now) || got.Name != "renamed" ||
		got.APIKeyHint != "sk-...9876" || got.TPMLimit != 100 || !got.UpdatedAt.Equal(e.now) {
		t.Fatalf("after deactivate: %+v", got)
	}
	// Once when created (its origins join the CORS list), once now.
	if len(e.rec.projects) != 2 || e.rec.projects[0] != p.ID || e.rec.projects[1] != p.ID {
		t.Fatalf("invalidated projects = %v, want [%s %[2]s]", e.rec.projects, p.ID)
	}
	got, err = e.svc.UpdateProject(ctx, p.ID, manage.UpdateProjectInput{IsActive: ptr(true), RevokeTokens: true})
	if err != nil {
		t.Fatal(err)
	}
	if !got.IsActive || got.DeactivatedAt != nil {
		t.Fatalf("after reactivate: %+v", got)
	}
	st, err := e.st.GetToken(ctx, tok.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.IsActive {
		t.Fatal("revoke_tokens left the token active")
	}
}

func TestCreateTokenValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.project(t, "p")
	off := e.project(t, "off")
	if _, err := e.svc.UpdateProject(t.Context(), off.ID, manage.UpdateProjectInput{IsActive: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	past, far := e.now.Add(-time.Second), e.now.Add(manage.MaxTokenTTL+time.Second)
	tests := []struct {
		name  string
		in    manage.CreateTokenInput
		field string
	}{
		{"no project", manage.CreateTokenInput{DurationMinutes: ptr(1)}, "project_id"},
		{"unknown project", manage.CreateTokenInput{ProjectID: "00000000-0000-0000-0000-000000000000", DurationMinutes: ptr(1)}, "project_id"},
		{"inactive project", manage.CreateTokenInput{ProjectID: off.ID, DurationMinutes: ptr(1)}, "project_id"},
		{"no lifetime", manage.CreateTokenInput{ProjectID: p.ID}, "duration_minutes"},
		{"both lifetimes", manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(1), ExpiresAt: &far}, "duration_minutes"},
		{"zero minutes", manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(0)}, "duration_minutes"},
		{"too many minutes", manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(525601)}, "duration_minutes"},
		{"expires in the past", manage.CreateTokenInput{ProjectID: p.ID, ExpiresAt: &past}, "expires_at"},
		{"expires too late", manage.CreateTokenInput{ProjectID: p.ID, ExpiresAt: &far}, "expires_at"},
		{"negative max_requests", manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(1), MaxRequests: ptr[int64](-1)}, "max_requests"},
		{"negative rpm", manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(1), RPMLimit: -1}, "rpm_limit"},
		{"long label", manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(1), Label: strings.Repeat("é", 201)}, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.CreateToken(t.Context(), tt.in)
			wantField(t, err, tt.field)
		})
	}
}

func TestCreateToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	tests := []struct {
		name    string
		in      manage.CreateTokenInput
		expires time.Time
		maxReq  *int64
	}{
		{"duration, unlimited", manage.CreateTokenInput{DurationMinutes: ptr(525600), MaxRequests: ptr[int64](0)}, e.now.Add(manage.MaxTokenTTL), nil},
		{"expires_at, quota", manage.CreateTokenInput{ExpiresAt: ptr(e.now.Add(time.Hour)), MaxRequests: ptr[int64](10), Label: " ci "}, e.now.Add(time.Hour), ptr[int64](10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.ProjectID = p.ID
			ct, err := e.svc.CreateToken(ctx, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := e.st.GetTokenAndProjectByHash(ctx, auth.Hash(ct.Secret))
			if err != nil {
				t.Fatalf("token not stored under the hash of its secret: %v", err)
			}
			if got.ID != ct.Token.ID || !got.ExpiresAt.Equal(tt.expires) || !got.IsActive || got.Label != strings.TrimSpace(tt.in.Label) ||
				!strings.HasPrefix(ct.Secret, got.Prefix) {
				t.Fatalf("stored %+v; want expiry %v", got, tt.expires)
			}
			if (got.MaxRequests == nil) != (tt.maxReq == nil) || (got.MaxRequests != nil && *got.MaxRequests != *tt.maxReq) {
				t.Fatalf("max_requests = %v, want %v", got.MaxRequests, tt.maxReq)
			}
		})
	}
}

func TestUpdateAndRevokeToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	ct := e.token(t, p.ID)
	id := ct.Token.ID

	if _, err := e.svc.UpdateToken(ctx, id, manage.UpdateTokenInput{Label: ptr(strings.Repeat("x", 201))}); err == nil {
		t.Fatal("long label accepted")
	}
	got, err := e.svc.UpdateToken(ctx, id, manage.UpdateTokenInput{MaxRequests: ptr[int64](5), RPMLimit: ptr(7), Label: ptr("new")})
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxRequests == nil || *got.MaxRequests != 5 || got.RPMLimit != 7 || got.Label != "new" {
		t.Fatalf("after update: %+v", got)
	}
	got, err = e.svc.UpdateToken(ctx, id, manage.UpdateTokenInput{MaxRequests: ptr[int64](0)})
	if err != nil || got.MaxRequests != nil {
		t.Fatalf("max_requests 0: %+v, %v; want unlimited", got, err)
	}
	for range 2 {
		got, err = e.svc.RevokeToken(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
	}
	stored, err := e.st.GetToken(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.IsActive || stored.DeactivatedAt == nil || !stored.DeactivatedAt.Equal(e.now) {
		t.Fatalf("after revoke: %+v", stored)
	}
	if len(e.rec.tokens) != 4 {
		t.Fatalf("invalidations = %v, want one per update and revoke (4)", e.rec.tokens)
	}
	if _, err := e.svc.RevokeToken(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: err = %v", err)
	}
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	for range 3 {
		e.token(t, p.ID)
	}
	l, err := e.svc.ListTokens(ctx, manage.TokenQuery{ProjectID: p.ID, PageQuery: manage.PageQuery{Page: 2, PageSize: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Total != 3 || l.Page.Page != 2 || l.PageSize != 2 {
		t.Fatalf("page 2 of 2: %d items, %+v", len(l.Items), l.Page)
	}
	l, err = e.svc.ListTokens(ctx, manage.TokenQuery{})
	if err != nil || l.PageSize != manage.DefaultPageSize || l.Page.Page != 1 {
		t.Fatalf("defaults: %+v, %v", l, err)
	}
	for _, q := range []struct {
		pq    manage.PageQuery
		field string
	}{{manage.PageQuery{Page: -1}, "page"}, {manage.PageQuery{PageSize: 1001}, "page_size"}, {manage.PageQuery{PageSize: -1}, "page_size"}} {
		_, err := e.svc.ListProjects(ctx, manage.ProjectQuery{PageQuery: q.pq})
		wantField(t, err, q.field)
	}
}

func TestUsageAndAudit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	day := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	rows := []store.Usage{
		{ID: "00000000-0000-0000-0000-000000000001", CreatedAt: day, RequestID: "r1", ProjectID: p.ID, Model: "a", Endpoint: "/v1/chat/completions", Status: 200, TotalTokens: 3},
		{ID: "00000000-0000-0000-0000-000000000002", CreatedAt: day.AddDate(0, 0, 1), RequestID: "r2", ProjectID: p.ID, Model: "b", Endpoint: "/v1/chat/completions", Status: 200, TotalTokens: 5},
	}
	if err := e.st.InsertUsage(ctx, rows); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		q     manage.UsageQuery
		total int64
		field string
	}{
		{manage.UsageQuery{ProjectID: p.ID}, 8, ""},
		{manage.UsageQuery{ProjectID: p.ID, From: "2030-01-02", To: "2030-01-02"}, 3, ""},
		{manage.UsageQuery{ProjectID: p.ID, From: "2030-01-03T00:00:00Z"}, 5, ""},
		{manage.UsageQuery{GroupBy: "week"}, 0, "group_by"},
		{manage.UsageQuery{From: "yesterday"}, 0, "from"},
		{manage.UsageQuery{From: "2030-01-03", To: "2030-01-01"}, 0, "to"},
	}
	for _, tt := range tests {
		r, err := e.svc.Usage(ctx, tt.q)
		if tt.field != "" {
			wantField(t, err, tt.field)
			continue
		}
		if err != nil {
			t.Fatalf("%+v: %v", tt.q, err)
		}
		var sum int64
		for _, row := range r.Totals {
			sum += row.TotalTokens
		}
		if sum != tt.total {
			t.Errorf("%+v: total tokens %d, want %d", tt.q, sum, tt.total)
		}
	}
	r, err := e.svc.Usage(ctx, manage.UsageQuery{GroupBy: "model"})
	if err != nil || len(r.Totals) != 2 {
		t.Fatalf("group_by model: %+v, %v", r, err)
	}

	e.svc.Audit(store.AuditEvent{Actor: "test", Action: "x", Outcome: store.OutcomeSuccess, ProjectID: "not-a-uuid", TokenID: p.ID})
	if len(e.rec.events) != 1 {
		t.Fatalf("events = %d", len(e.rec.events))
	}
	ev := e.rec.events[0]
	if ev.ID == "" || !ev.CreatedAt.Equal(e.now) || ev.ProjectID != "" || ev.TokenID != p.ID {
		t.Fatalf("audit event = %+v; want ID and time filled, the non-UUID project ID cleared", ev)
	}
	if err := e.st.InsertAuditEvents(ctx, e.rec.events); err != nil {
		t.Fatal(err)
	}
	l, err := e.svc.ListAudit(ctx, manage.AuditQuery{Action: "x"})
	if err != nil || l.Total != 1 || l.Items[0].ID != ev.ID {
		t.Fatalf("ListAudit: %+v, %v", l, err)
	}
	if _, err := e.svc.ListAudit(ctx, manage.AuditQuery{Outcome: "maybe"}); err == nil {
		t.Fatal("bad outcome accepted")
	}
	if got, err := e.svc.GetAudit(ctx, ev.ID); err != nil || got.Action != "x" {
		t.Fatalf("GetAudit: %+v, %v", got, err)
	}
}

func TestOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{nil, store.OutcomeSuccess},
		{&manage.ValidationError{Field: "name", Message: "bad"}, store.OutcomeFailure},
		{store.ErrNotFound, store.OutcomeFailure},
		{store.ErrConflict, store.OutcomeFailure},
		{context.DeadlineExceeded, store.OutcomeError},
	}
	for _, tt := range tests {
		if got, _ := manage.Outcome(tt.err); got != tt.want {
			t.Errorf("Outcome(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestInactiveTokensStayRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	deactivate := map[string]func(id string) error{
		"DELETE": func(id string) error { _, err := e.svc.RevokeToken(ctx, id); return err },
		"PATCH is_active=false": func(id string) error {
			_, err := e.svc.UpdateToken(ctx, id, manage.UpdateTokenInput{IsActive: ptr(false)})
			return err
		},
		"project-wide revocation": func(string) error { _, err := e.svc.RevokeProjectTokens(ctx, p.ID); return err },
	}
	for name, off := range deactivate {
		t.Run(name, func(t *testing.T) {
			id := e.token(t, p.ID).Token.ID
			if err := off(id); err != nil {
				t.Fatal(err)
			}
			before, err := e.st.GetToken(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.svc.UpdateToken(ctx, id, manage.UpdateTokenInput{IsActive: ptr(true), Label: ptr("again")})
			if !errors.Is(err, manage.ErrTokenRevoked) || !errors.Is(err, store.ErrConflict) {
				t.Fatalf("reactivating: err = %v, want ErrTokenRevoked (a conflict)", err)
			}
			after, err := e.st.GetToken(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if after.IsActive || after.Label != before.Label || !after.DeactivatedAt.Equal(*before.DeactivatedAt) {
				t.Fatalf("a refused reactivation changed the token: %+v, was %+v", after, before)
			}
			// What does not reactivate still works on a revoked token.
			got, err := e.svc.UpdateToken(ctx, id, manage.UpdateTokenInput{IsActive: ptr(false), Label: ptr("retired")})
			if err != nil || got.IsActive || got.Label != "retired" || !got.DeactivatedAt.Equal(*before.DeactivatedAt) {
				t.Fatalf("relabelling a revoked token: %+v, %v", got, err)
			}
		})
	}
	active := e.token(t, p.ID).Token.ID
	if got, err := e.svc.UpdateToken(ctx, active, manage.UpdateTokenInput{IsActive: ptr(true)}); err != nil || !got.IsActive {
		t.Fatalf("is_active=true on an active token: %+v, %v; want a no-op", got, err)
	}
}

func TestNamesAndLabelsRefuseControlCharacters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p := e.project(t, "p")
	tok := e.token(t, p.ID)
	bad := map[string]string{
		"NUL":                 "a\x00b",
		"newline":             "a\nb",
		"trailing newline":    "ab\n",
		"carriage return":     "a\rb",
		"tab":                 "a\tb",
		"escape":              "a\x1b[31mb",
		"DEL":                 "a\x7fb",
		"C1 (NEL)":            "a\u0085b",
		"C1 (CSI)":            "a\u009bb",
		"line separator":      "a\u2028b",
		"paragraph separator": "a\u2029b",
		"LRE":                 "a\u202ab",
		"RLO":                 "a\u202eb",
		"LRI":                 "a\u2066b",
		"PDI":                 "a\u2069b",
		"invalid UTF-8":       "a\xffb",
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := e.svc.CreateProject(ctx, manage.CreateProjectInput{Name: s, APIKey: "sk-upstream-secret-1234"})
			wantField(t, err, "name")
			_, err = e.svc.UpdateProject(ctx, p.ID, manage.UpdateProjectInput{Name: &s})
			wantField(t, err, "name")
			_, err = e.svc.CreateToken(ctx, manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(1), Label: s})
			wantField(t, err, "label")
			_, err = e.svc.UpdateToken(ctx, tok.Token.ID, manage.UpdateTokenInput{Label: &s})
			wantField(t, err, "label")
		})
	}
	for _, ok := range []string{"équipe données", "チーム", "team-a_b.c (prod)", "مشروع", "a\u200db"} {
		if _, err := e.svc.UpdateToken(ctx, tok.Token.ID, manage.UpdateTokenInput{Label: &ok}); err != nil {
			t.Errorf("label %q refused: %v", ok, err)
		}
	}
}

func TestPagesAreBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	e.project(t, "p")
	last := manage.MaxOffset/manage.MaxPageSize + 1
	for _, q := range []struct {
		pq    manage.PageQuery
		field string
	}{
		{manage.PageQuery{Page: math.MaxInt64}, "page"},
		{manage.PageQuery{Page: math.MaxInt64, PageSize: manage.MaxPageSize}, "page"},
		{manage.PageQuery{Page: math.MaxInt64/2 + 2, PageSize: 2}, "page"}, // (page-1)*2 wraps to a small offset
		{manage.PageQuery{Page: last + 1, PageSize: manage.MaxPageSize}, "page"},
		{manage.PageQuery{Page: manage.MaxOffset + 2, PageSize: 1}, "page"},
		{manage.PageQuery{Page: math.MinInt64}, "page"},
	} {
		_, err := e.svc.ListProjects(ctx, manage.ProjectQuery{PageQuery: q.pq})
		wantField(t, err, q.field)
		_, err = e.svc.ListAudit(ctx, manage.AuditQuery{PageQuery: q.pq})
		wantField(t, err, q.field)
	}
	l, err := e.svc.ListProjects(ctx, manage.ProjectQuery{PageQuery: manage.PageQuery{Page: last, PageSize: manage.MaxPageSize}})
	if err != nil || len(l.Items) != 0 || l.Total != 1 {
		t.Fatalf("the last page allowed: %+v, %v; want an empty page", l, err)
	}
}

func TestProjectNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	want := map[string]string{}
	for i := range manage.MaxPageSize + 2 {
		name := fmt.Sprintf("p%04d", i)
		p, err := e.svc.CreateProject(ctx, manage.CreateProjectInput{Name: name, APIKey: "sk-upstream-secret-1234"})
		if err != nil {
			t.Fatal(err)
		}
		want[p.ID] = name
	}
	off := e.project(t, "off")
	if _, err := e.svc.UpdateProject(ctx, off.ID, manage.UpdateProjectInput{IsActive: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	want[off.ID] = "off"
	got, err := e.svc.ProjectNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("ProjectNames: %d names, want %d (every project, over two pages, inactive ones too)", len(got), len(want))
	}
}

func TestPolicies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	p, err := e.svc.CreateProject(ctx, manage.CreateProjectInput{Name: "web", APIKey: "sk-upstream-secret-1234",
		AllowedOrigins:  []string{"HTTPS://App.Example.com", "http://localhost:5173", "https://app.example.com", "*"},
		AllowedModels:   []string{"gpt-4.1-*", "o3", "o3"},
		CacheTTLSeconds: 120})
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	got, err := e.svc.GetProject(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://app.example.com", "http://localhost:5173", "*"}; !slices.Equal(got.AllowedOrigins, want) {
		t.Errorf("origins = %q, want %q (normalized, deduplicated)", got.AllowedOrigins, want)
	}
	if want := []string{"gpt-4.1-*", "o3"}; !slices.Equal(got.AllowedModels, want) {
		t.Errorf("models = %q, want %q", got.AllowedModels, want)
	}
	if got.CacheTTLSeconds != 120 {
		t.Errorf("cache ttl = %d, want 120", got.CacheTTLSeconds)
	}

	upd, err := e.svc.UpdateProject(ctx, p.ID, manage.UpdateProjectInput{AllowedOrigins: ptr([]string{}), CacheTTLSeconds: ptr(0)})
	if err != nil {
		t.Fatalf("UpdateProject: %v", err)
	}
	if upd.AllowedOrigins != nil || upd.CacheTTLSeconds != 0 || len(upd.AllowedModels) != 2 {
		t.Errorf("after clearing origins and ttl: %+v", upd)
	}
	_, err = e.svc.UpdateProject(ctx, p.ID, manage.UpdateProjectInput{AllowedModels: ptr([]string{"ok", "not ok"})})
	wantField(t, err, "allowed_models")

	ct, err := e.svc.CreateToken(ctx, manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(5),
		AllowedModels: []string{"gpt-4.1-mini"}})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if !slices.Equal(ct.Token.AllowedModels, []string{"gpt-4.1-mini"}) {
		t.Errorf("token models = %q", ct.Token.AllowedModels)
	}
	_, err = e.svc.CreateToken(ctx, manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: ptr(5), AllowedModels: []string{"\x00"}})
	wantField(t, err, "allowed_models")
	tok, err := e.svc.UpdateToken(ctx, ct.Token.ID, manage.UpdateTokenInput{AllowedModels: ptr([]string{})})
	if err != nil || tok.AllowedModels != nil {
		t.Fatalf("UpdateToken clearing models: %v, %q", err, tok.AllowedModels)
	}
	if !slices.Contains(e.rec.tokens, ct.Token.ID) {
		t.Errorf("updating the token's models did not invalidate it")
	}
}
