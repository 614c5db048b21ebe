package manage

import (
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// The views below are the JSON shapes of SPEC §6.2, shared by the HTTP API
// and the CLI's --json output. None of them can carry an upstream key or a
// token hash; only NewTokenView carries a token secret.

// ProjectView is a project as shown to operators: the upstream key only in
// masked form.
type ProjectView struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	Provider      string     `json:"provider"`
	BaseURL       string     `json:"base_url"`
	APIVersion    string     `json:"api_version"`
	APIKeyMasked  string     `json:"api_key_masked"`
	IsActive      bool       `json:"is_active"`
	DeactivatedAt *time.Time `json:"deactivated_at"`
	RPMLimit      int        `json:"rpm_limit"`
	TPMLimit      int        `json:"tpm_limit"`
	// AllowedOrigins and AllowedModels are [] when empty, never null.
	AllowedOrigins  []string  `json:"allowed_origins"`
	AllowedModels   []string  `json:"allowed_models"`
	CacheTTLSeconds int       `json:"cache_ttl_seconds"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// NewProjectView returns the view of p.
func NewProjectView(p *store.Project) ProjectView {
	return ProjectView{
		ID: p.ID, Name: p.Name, Provider: p.Provider, BaseURL: p.BaseURL, APIVersion: p.APIVersion,
		APIKeyMasked: p.APIKeyHint, IsActive: p.IsActive, DeactivatedAt: p.DeactivatedAt,
		RPMLimit: p.RPMLimit, TPMLimit: p.TPMLimit, AllowedOrigins: list(p.AllowedOrigins),
		AllowedModels: list(p.AllowedModels), CacheTTLSeconds: p.CacheTTLSeconds,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
}

// list returns v, or an empty slice for nil, so JSON shows [].
func list(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// TokenView is a stored token: its display prefix, never its secret or hash.
// MaxRequests null means unlimited.
type TokenView struct {
	ID            string     `json:"id"`
	ProjectID     string     `json:"project_id"`
	Prefix        string     `json:"prefix"`
	Label         string     `json:"label"`
	ExpiresAt     time.Time  `json:"expires_at"`
	MaxRequests   *int64     `json:"max_requests"`
	RequestCount  int64      `json:"request_count"`
	IsActive      bool       `json:"is_active"`
	DeactivatedAt *time.Time `json:"deactivated_at"`
	RPMLimit      int        `json:"rpm_limit"`
	TPMLimit      int        `json:"tpm_limit"`
	AllowedModels []string   `json:"allowed_models"`
	CreatedAt     time.Time  `json:"created_at"`
	LastUsedAt    *time.Time `json:"last_used_at"`
}

// NewTokenView returns the view of t.
func NewTokenView(t *store.Token) TokenView {
	return TokenView{
		ID: t.ID, ProjectID: t.ProjectID, Prefix: t.Prefix, Label: t.Label, ExpiresAt: t.ExpiresAt,
		MaxRequests: t.MaxRequests, RequestCount: t.RequestCount, IsActive: t.IsActive,
		DeactivatedAt: t.DeactivatedAt, RPMLimit: t.RPMLimit, TPMLimit: t.TPMLimit,
		AllowedModels: list(t.AllowedModels), CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt,
	}
}

// CreatedTokenView is the answer to creating a token: the only place the
// secret (Token) ever appears.
type CreatedTokenView struct {
	ID            string    `json:"id"`
	Token         string    `json:"token"`
	Prefix        string    `json:"prefix"`
	ProjectID     string    `json:"project_id"`
	ExpiresAt     time.Time `json:"expires_at"`
	MaxRequests   *int64    `json:"max_requests"`
	RPMLimit      int       `json:"rpm_limit"`
	TPMLimit      int       `json:"tpm_limit"`
	Label         string    `json:"label"`
	AllowedModels []string  `json:"allowed_models"`
}

// NewCreatedTokenView returns the view of c.
func NewCreatedTokenView(c *CreatedToken) CreatedTokenView {
	t := c.Token
	return CreatedTokenView{
		ID: t.ID, Token: c.Secret, Prefix: t.Prefix, ProjectID: t.ProjectID, ExpiresAt: t.ExpiresAt,
		MaxRequests: t.MaxRequests, RPMLimit: t.RPMLimit, TPMLimit: t.TPMLimit, Label: t.Label,
		AllowedModels: list(t.AllowedModels),
	}
}

// AuditView is an audit event. Empty optional IDs are null.
type AuditView struct {
	ID        string         `json:"id"`
	CreatedAt time.Time      `json:"created_at"`
	Actor     string         `json:"actor"`
	Action    string         `json:"action"`
	Outcome   string         `json:"outcome"`
	ProjectID *string        `json:"project_id"`
	TokenID   *string        `json:"token_id"`
	RequestID string         `json:"request_id"`
	ClientIP  string         `json:"client_ip"`
	Method    string         `json:"method"`
	Path      string         `json:"path"`
	Reason    string         `json:"reason"`
	Metadata  map[string]any `json:"metadata"`
}

// NewAuditView returns the view of ev.
func NewAuditView(ev *store.AuditEvent) AuditView {
	md := ev.Metadata
	if md == nil {
		md = map[string]any{}
	}
	return AuditView{
		ID: ev.ID, CreatedAt: ev.CreatedAt, Actor: ev.Actor, Action: ev.Action, Outcome: ev.Outcome,
		ProjectID: optional(ev.ProjectID), TokenID: optional(ev.TokenID), RequestID: ev.RequestID,
		ClientIP: ev.ClientIP, Method: ev.Method, Path: ev.Path, Reason: ev.Reason, Metadata: md,
	}
}

// UsageView is aggregated usage: one row per group (Key is the day, model or
// token ID; "" for the overall total), with the window it covers (null ends
// are unbounded).
type UsageView struct {
	GroupBy *string        `json:"group_by"`
	From    *time.Time     `json:"from"`
	To      *time.Time     `json:"to"`
	Data    []UsageRowView `json:"data"`
}

// UsageRowView is one group of UsageView.
type UsageRowView struct {
	Key              string `json:"key"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
}

// NewUsageView returns the view of r.
func NewUsageView(r *UsageReport) UsageView {
	v := UsageView{GroupBy: optional(r.GroupBy), Data: make([]UsageRowView, 0, len(r.Totals))}
	if !r.From.IsZero() {
		v.From = &r.From
	}
	if !r.To.IsZero() {
		v.To = &r.To
	}
	for _, t := range r.Totals {
		v.Data = append(v.Data, UsageRowView{Key: t.Key, Requests: t.Requests, PromptTokens: t.PromptTokens,
			CompletionTokens: t.CompletionTokens, TotalTokens: t.TotalTokens})
	}
	return v
}

// ListView is a page of a list: {"data": [...], "pagination": {...}}.
type ListView[T any] struct {
	Data       []T            `json:"data"`
	Pagination PaginationView `json:"pagination"`
}

// PaginationView describes the page of a ListView.
type PaginationView struct {
	Page     int `json:"page"`
	PageSize int `json:"page_size"`
	Total    int `json:"total"`
}

// NewListView maps every item of l with view.
func NewListView[R, T any](l *List[R], view func(R) T) ListView[T] {
	out := ListView[T]{Data: make([]T, 0, len(l.Items)),
		Pagination: PaginationView{Page: l.Page.Page, PageSize: l.PageSize, Total: l.Total}}
	for _, it := range l.Items {
		out.Data = append(out.Data, view(it))
	}
	return out
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
