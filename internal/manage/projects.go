package manage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/policy"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
)

const (
	maxNameLen   = 100
	maxAPIKeyLen = 4096
)

// CreateProjectInput is a new project. Provider "" means openai; BaseURL ""
// means proxy.DefaultBaseURL (Azure has none); APIVersion applies to Azure
// only ("" means proxy.DefaultAPIVersion). Limits of 0 mean unlimited. The
// policies (SPEC §6.7): AllowedOrigins empty means no browser access,
// AllowedModels empty means any model, CacheTTLSeconds 0 means responses
// are cached only when a request asks.
type CreateProjectInput struct {
	Name            string
	Provider        string
	BaseURL         string
	APIKey          string
	APIVersion      string
	RPMLimit        int
	TPMLimit        int
	AllowedOrigins  []string
	AllowedModels   []string
	CacheTTLSeconds int
}

// UpdateProjectInput changes the non-nil fields of a project. IsActive false
// deactivates the project (its tokens stop working at once); RevokeTokens
// true deactivates every token of the project.
type UpdateProjectInput struct {
	Name       *string
	BaseURL    *string
	APIKey     *string
	APIVersion *string
	IsActive   *bool
	RPMLimit   *int
	TPMLimit   *int
	// Non-nil lists replace the project's (an empty one clears it).
	AllowedOrigins  *[]string
	AllowedModels   *[]string
	CacheTTLSeconds *int
	RevokeTokens    bool
}

// CreateProject validates in, encrypts the upstream key and stores the
// project. A *ValidationError names the bad field; a taken name is
// store.ErrConflict.
func (s *Service) CreateProject(ctx context.Context, in CreateProjectInput) (*store.Project, error) {
	name, err := checkName(in.Name)
	if err != nil {
		return nil, err
	}
	provider := strings.ToLower(strings.TrimSpace(in.Provider))
	if provider == "" {
		provider = store.ProviderOpenAI
	}
	if !slices.Contains(proxy.Providers, provider) {
		return nil, invalid("provider", "must be one of %s", strings.Join(proxy.Providers, ", "))
	}
	defaultURL := proxy.DefaultBaseURL(provider)
	baseURL := strings.TrimSpace(in.BaseURL)
	if baseURL == "" && defaultURL == "" {
		return nil, invalid("base_url", "is required for provider %s (e.g. https://NAME.openai.azure.com)", provider)
	}
	if baseURL == "" {
		baseURL = defaultURL
	}
	if baseURL, err = checkBaseURL(baseURL); err != nil {
		return nil, err
	}
	apiVersion, err := checkAPIVersion(provider, in.APIVersion)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(in.APIKey) == "" {
		return nil, invalid("api_key", "is required")
	}
	if err := checkLimit("rpm_limit", in.RPMLimit); err != nil {
		return nil, err
	}
	if err := checkLimit("tpm_limit", in.TPMLimit); err != nil {
		return nil, err
	}
	origins, err := checkOrigins(in.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	models, err := checkModels(in.AllowedModels)
	if err != nil {
		return nil, err
	}
	if err := checkCacheTTL(in.CacheTTLSeconds); err != nil {
		return nil, err
	}
	now := s.clock()
	p := &store.Project{
		ID:              uuid.NewString(),
		Name:            name,
		Provider:        provider,
		BaseURL:         baseURL,
		APIVersion:      apiVersion,
		IsActive:        true,
		RPMLimit:        in.RPMLimit,
		TPMLimit:        in.TPMLimit,
		AllowedOrigins:  origins,
		AllowedModels:   models,
		CacheTTLSeconds: in.CacheTTLSeconds,
		CreatedAt:       now,
		UpdatedAt:       now,
	}
	if err := s.setAPIKey(p, in.APIKey); err != nil {
		return nil, err
	}
	if err := s.store.CreateProject(ctx, p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("project name %q is taken: %w", name, err)
		}
		return nil, fmt.Errorf("create project: %w", err)
	}
	s.inval.InvalidateProject(p.ID) // its origins join the CORS preflight list
	s.logger.InfoContext(ctx, "project created", "project_id", p.ID, "provider", p.Provider)
	return p, nil
}

// GetProject returns the project with id, or store.ErrNotFound.
func (s *Service) GetProject(ctx context.Context, id string) (*store.Project, error) {
	p, err := s.store.GetProject(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	return p, nil
}

// FindProject returns the project whose ID or, failing that, name is ref, or
// store.ErrNotFound.
func (s *Service) FindProject(ctx context.Context, ref string) (*store.Project, error) {
	p, err := s.store.GetProject(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		p, err = s.store.GetProjectByName(ctx, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("find project %q: %w", ref, err)
	}
	return p, nil
}

// ProjectQuery selects projects; Active nil means all.
type ProjectQuery struct {
	Active *bool
	PageQuery
}

// ListProjects returns one page of projects.
func (s *Service) ListProjects(ctx context.Context, q ProjectQuery) (*List[*store.Project], error) {
	page, err := q.resolve()
	if err != nil {
		return nil, err
	}
	items, total, err := s.store.ListProjects(ctx, store.ProjectFilter{Active: q.Active, Page: page})
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return &List[*store.Project]{Items: items, Page: page, Total: total}, nil
}

// ProjectNames returns the name of every project, active or not, by ID (for
// the llm_project_info metric). It reads the project list page by page and
// stops at the first error.
func (s *Service) ProjectNames(ctx context.Context) (map[string]string, error) {
	names := make(map[string]string)
	for page := 1; ; page++ {
		items, total, err := s.store.ListProjects(ctx, store.ProjectFilter{Page: store.Page{Page: page, PageSize: MaxPageSize}})
		if err != nil {
			return nil, fmt.Errorf("list projects: %w", err)
		}
		for _, p := range items {
			names[p.ID] = p.Name
		}
		if len(items) < MaxPageSize || page*MaxPageSize >= total {
			return names, nil
		}
	}
}

// UpdateProject applies in to the project with id and invalidates its cached
// authentication data. Deactivating sets deactivated_at; reactivating clears
// it. It returns the updated project, store.ErrNotFound, a
// *ValidationError, or store.ErrConflict for a taken name.
func (s *Service) UpdateProject(ctx context.Context, id string, in UpdateProjectInput) (*store.Project, error) {
	p, err := s.store.GetProject(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	if in.Name != nil {
		if p.Name, err = checkName(*in.Name); err != nil {
			return nil, err
		}
	}
	if in.BaseURL != nil {
		if p.BaseURL, err = checkBaseURL(strings.TrimSpace(*in.BaseURL)); err != nil {
			return nil, err
		}
	}
	if in.APIVersion != nil {
		if p.APIVersion, err = checkAPIVersion(p.Provider, *in.APIVersion); err != nil {
			return nil, err
		}
	}
	if in.RPMLimit != nil {
		if err := checkLimit("rpm_limit", *in.RPMLimit); err != nil {
			return nil, err
		}
		p.RPMLimit = *in.RPMLimit
	}
	if in.TPMLimit != nil {
		if err := checkLimit("tpm_limit", *in.TPMLimit); err != nil {
			return nil, err
		}
		p.TPMLimit = *in.TPMLimit
	}
	if in.AllowedOrigins != nil {
		if p.AllowedOrigins, err = checkOrigins(*in.AllowedOrigins); err != nil {
			return nil, err
		}
	}
	if in.AllowedModels != nil {
		if p.AllowedModels, err = checkModels(*in.AllowedModels); err != nil {
			return nil, err
		}
	}
	if in.CacheTTLSeconds != nil {
		if err := checkCacheTTL(*in.CacheTTLSeconds); err != nil {
			return nil, err
		}
		p.CacheTTLSeconds = *in.CacheTTLSeconds
	}
	if in.APIKey != nil {
		if strings.TrimSpace(*in.APIKey) == "" {
			return nil, invalid("api_key", "must not be empty")
		}
		if err := s.setAPIKey(p, *in.APIKey); err != nil {
			return nil, err
		}
	}
	now := s.clock()
	if in.IsActive != nil && *in.IsActive != p.IsActive {
		p.IsActive = *in.IsActive
		p.DeactivatedAt = nil
		if !p.IsActive {
			p.DeactivatedAt = &now
		}
	}
	p.UpdatedAt = now
	if err := s.store.UpdateProject(ctx, p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("project name %q is taken: %w", p.Name, err)
		}
		return nil, fmt.Errorf("update project: %w", err)
	}
	s.inval.InvalidateProject(p.ID)
	if in.RevokeTokens {
		if _, err := s.RevokeProjectTokens(ctx, p.ID); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// RevokeProjectTokens deactivates every active token of the project with id,
// invalidates the project (which drops its cached tokens), and returns how many were revoked (store.ErrNotFound for
// an unknown project).
func (s *Service) RevokeProjectTokens(ctx context.Context, id string) (int64, error) {
	if _, err := s.store.GetProject(ctx, id); err != nil {
		return 0, fmt.Errorf("load project: %w", err)
	}
	n, err := s.store.DeactivateProjectTokens(ctx, id, s.clock())
	if err != nil {
		return 0, fmt.Errorf("revoke project tokens: %w", err)
	}
	s.inval.InvalidateProject(id)
	s.logger.InfoContext(ctx, "project tokens revoked", "project_id", id, "count", n)
	return n, nil
}

func (s *Service) setAPIKey(p *store.Project, key string) error {
	key = strings.TrimSpace(key)
	if len(key) > maxAPIKeyLen {
		return invalid("api_key", "must be at most %d characters", maxAPIKeyLen)
	}
	enc, err := s.cipher.Encrypt([]byte(key))
	if err != nil {
		return fmt.Errorf("encrypt api key: %w", err)
	}
	p.APIKeyEncrypted = enc
	p.APIKeyHint = secret.Mask(key)
	return nil
}

func checkName(name string) (string, error) {
	if err := checkText("name", name); err != nil {
		return "", err
	}
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n < 1 || n > maxNameLen {
		return "", invalid("name", "must be between 1 and %d characters", maxNameLen)
	}
	return name, nil
}

// checkBaseURL accepts an absolute http(s) URL without credentials, query or
// fragment, and drops a trailing slash.
func checkBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", invalid("base_url", "must be an absolute http or https URL")
	}
	if u.User != nil {
		return "", invalid("base_url", "must not contain credentials; set api_key instead")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", invalid("base_url", "must not contain a query or fragment")
	}
	return strings.TrimRight(raw, "/"), nil
}

func checkAPIVersion(provider, v string) (string, error) {
	v = strings.TrimSpace(v)
	if provider != store.ProviderAzure {
		if v != "" {
			return "", invalid("api_version", "applies to provider azure only")
		}
		return "", nil
	}
	if v == "" {
		return proxy.DefaultAPIVersion, nil
	}
	if len(v) > 64 {
		return "", invalid("api_version", "must be at most 64 characters")
	}
	if err := checkText("api_version", v); err != nil {
		return "", err
	}
	return v, nil
}

// maxLimit is the largest per-minute limit: the columns are 32-bit integers.
const maxLimit = math.MaxInt32

func checkLimit(field string, v int) error {
	if v < 0 || v > maxLimit {
		return invalid(field, "must be from 0 (unlimited) to %d", maxLimit)
	}
	return nil
}

// checkOrigins validates allowed_origins and returns them normalized
// (lower-case scheme and host), without duplicates; empty is nil.
func checkOrigins(in []string) ([]string, error) {
	if len(in) > policy.MaxListLen {
		return nil, invalid("allowed_origins", "must have at most %d entries", policy.MaxListLen)
	}
	var out []string
	for i, o := range in {
		n, err := policy.NormalizeOrigin(o)
		if err != nil {
			return nil, invalid("allowed_origins", "entry %d %s", i, err)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// checkModels validates allowed_models (glob patterns) for field and
// returns them without duplicates; empty is nil.
func checkModels(in []string) ([]string, error) {
	if len(in) > policy.MaxListLen {
		return nil, invalid("allowed_models", "must have at most %d entries", policy.MaxListLen)
	}
	var out []string
	for i, p := range in {
		if err := policy.CheckPattern(p); err != nil {
			return nil, invalid("allowed_models", "entry %d %s", i, err)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// MaxCacheTTL is the longest cache_ttl_seconds: one day.
const MaxCacheTTL = 86400

func checkCacheTTL(v int) error {
	if v < 0 || v > MaxCacheTTL {
		return invalid("cache_ttl_seconds", "must be from 0 (cache only on request) to %d", MaxCacheTTL)
	}
	return nil
}
