package manage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Token lifetime bounds: one minute to one year (525600 minutes).
const (
	MinTokenTTL = time.Minute
	MaxTokenTTL = 525600 * time.Minute

	maxLabelLen = 200
)

// CreateTokenInput is a new withering token. Exactly one of DurationMinutes
// (1–525600) and ExpiresAt (at most that far ahead) must be set: there is no default
// lifetime, so every token's expiry is a deliberate choice. MaxRequests nil
// or 0 means unlimited; limits of 0 mean unlimited. AllowedModels narrows
// the project's allow-list (a model must match both; empty: the project's
// list alone).
type CreateTokenInput struct {
	ProjectID       string
	DurationMinutes *int
	ExpiresAt       *time.Time
	MaxRequests     *int64
	RPMLimit        int
	TPMLimit        int
	Label           string
	AllowedModels   []string
}

// CreatedToken is a new token and its secret, which is shown this once and
// never stored.
type CreatedToken struct {
	Token  *store.Token
	Secret string
}

// CreateToken validates in and issues a token for an existing, active
// project. A *ValidationError names the bad field (project_id for a missing
// or inactive project).
func (s *Service) CreateToken(ctx context.Context, in CreateTokenInput) (*CreatedToken, error) {
	if strings.TrimSpace(in.ProjectID) == "" {
		return nil, invalid("project_id", "is required")
	}
	p, err := s.store.GetProject(ctx, in.ProjectID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid("project_id", "no such project")
	}
	if err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	if !p.IsActive {
		return nil, invalid("project_id", "the project is inactive")
	}
	now := s.clock()
	var expires time.Time
	switch {
	case in.DurationMinutes != nil && in.ExpiresAt != nil:
		return nil, invalid("duration_minutes", "give either duration_minutes or expires_at, not both")
	case in.DurationMinutes != nil:
		m := *in.DurationMinutes
		if m < 1 || time.Duration(m) > MaxTokenTTL/time.Minute {
			return nil, invalid("duration_minutes", "must be between 1 and 525600 minutes")
		}
		expires = now.Add(time.Duration(m) * time.Minute)
	case in.ExpiresAt != nil:
		expires = in.ExpiresAt.UTC()
		if !expires.After(now) {
			return nil, invalid("expires_at", "must be in the future")
		}
		if expires.Sub(now) > MaxTokenTTL {
			return nil, invalid("expires_at", "must be at most one year (525600 minutes) ahead")
		}
	default:
		return nil, invalid("duration_minutes", "one of duration_minutes or expires_at is required")
	}
	maxReq, err := checkMaxRequests(in.MaxRequests)
	if err != nil {
		return nil, err
	}
	if err := checkLimit("rpm_limit", in.RPMLimit); err != nil {
		return nil, err
	}
	if err := checkLimit("tpm_limit", in.TPMLimit); err != nil {
		return nil, err
	}
	label, err := checkLabel(in.Label)
	if err != nil {
		return nil, err
	}
	models, err := checkModels(in.AllowedModels)
	if err != nil {
		return nil, err
	}
	secret, prefix, hash, err := auth.NewToken()
	if err != nil {
		return nil, fmt.Errorf("generate token: %w", err)
	}
	t := &store.Token{
		ID:            uuid.NewString(),
		ProjectID:     p.ID,
		Hash:          hash,
		Prefix:        prefix,
		Label:         label,
		ExpiresAt:     expires.Truncate(time.Microsecond),
		MaxRequests:   maxReq,
		IsActive:      true,
		RPMLimit:      in.RPMLimit,
		TPMLimit:      in.TPMLimit,
		AllowedModels: models,
		CreatedAt:     now,
	}
	if err := s.store.CreateToken(ctx, t); err != nil {
		return nil, fmt.Errorf("create token: %w", err)
	}
	s.logger.InfoContext(ctx, "token created", "token_id", t.ID, "project_id", t.ProjectID)
	return &CreatedToken{Token: t, Secret: secret}, nil
}

// GetToken returns the token with id, or store.ErrNotFound.
func (s *Service) GetToken(ctx context.Context, id string) (*store.Token, error) {
	t, err := s.store.GetToken(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load token: %w", err)
	}
	return t, nil
}

// TokenQuery selects tokens; empty or nil fields do not filter.
type TokenQuery struct {
	ProjectID string
	Active    *bool
	PageQuery
}

// ListTokens returns one page of tokens.
func (s *Service) ListTokens(ctx context.Context, q TokenQuery) (*List[*store.Token], error) {
	page, err := q.resolve()
	if err != nil {
		return nil, err
	}
	items, total, err := s.store.ListTokens(ctx, store.TokenFilter{ProjectID: q.ProjectID, Active: q.Active, Page: page})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return &List[*store.Token]{Items: items, Page: page, Total: total}, nil
}

// UpdateTokenInput changes the non-nil fields of a token. MaxRequests 0
// means unlimited; a non-nil AllowedModels replaces the token's list (an
// empty one clears it).
type UpdateTokenInput struct {
	IsActive      *bool
	MaxRequests   *int64
	RPMLimit      *int
	TPMLimit      *int
	Label         *string
	AllowedModels *[]string
}

// ErrTokenRevoked is the answer to reactivating an inactive token. A token
// revoked with DELETE must stay revoked (SPEC §6.2), and the data model
// cannot tell a DELETE from PATCH is_active=false or a project-wide
// revocation (each sets is_active false and deactivated_at), so no inactive
// token comes back: deactivation is one-way, and access is restored by
// issuing a new token. It wraps store.ErrConflict.
var ErrTokenRevoked = fmt.Errorf("the token is revoked and cannot be reactivated; create a new token: %w", store.ErrConflict)

// UpdateToken applies in to the token with id and invalidates its cached
// authentication data, so the change holds from the next request. It
// returns the updated token, store.ErrNotFound, a *ValidationError, or
// ErrTokenRevoked when in reactivates an inactive token (nothing is changed
// then).
func (s *Service) UpdateToken(ctx context.Context, id string, in UpdateTokenInput) (*store.Token, error) {
	t, err := s.store.GetToken(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load token: %w", err)
	}
	if in.IsActive != nil && *in.IsActive && !t.IsActive {
		return nil, fmt.Errorf("update token %s: %w", t.ID, ErrTokenRevoked)
	}
	if in.MaxRequests != nil {
		if t.MaxRequests, err = checkMaxRequests(in.MaxRequests); err != nil {
			return nil, err
		}
	}
	if in.RPMLimit != nil {
		if err := checkLimit("rpm_limit", *in.RPMLimit); err != nil {
			return nil, err
		}
		t.RPMLimit = *in.RPMLimit
	}
	if in.TPMLimit != nil {
		if err := checkLimit("tpm_limit", *in.TPMLimit); err != nil {
			return nil, err
		}
		t.TPMLimit = *in.TPMLimit
	}
	if in.Label != nil {
		if t.Label, err = checkLabel(*in.Label); err != nil {
			return nil, err
		}
	}
	if in.AllowedModels != nil {
		if t.AllowedModels, err = checkModels(*in.AllowedModels); err != nil {
			return nil, err
		}
	}
	if in.IsActive != nil && !*in.IsActive && t.IsActive {
		now := s.clock()
		t.IsActive = false
		t.DeactivatedAt = &now
	}
	if err := s.store.UpdateToken(ctx, t); err != nil {
		return nil, fmt.Errorf("update token: %w", err)
	}
	s.inval.InvalidateToken(t.ID)
	return t, nil
}

// RevokeToken deactivates the token with id and invalidates it. Revoking a
// revoked token succeeds and changes nothing; an unknown id is
// store.ErrNotFound.
func (s *Service) RevokeToken(ctx context.Context, id string) (*store.Token, error) {
	t, err := s.store.GetToken(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load token: %w", err)
	}
	if t.IsActive {
		now := s.clock()
		t.IsActive = false
		t.DeactivatedAt = &now
		if err := s.store.UpdateToken(ctx, t); err != nil {
			return nil, fmt.Errorf("revoke token: %w", err)
		}
		s.logger.InfoContext(ctx, "token revoked", "token_id", t.ID, "project_id", t.ProjectID)
	}
	s.inval.InvalidateToken(t.ID)
	return t, nil
}

func checkMaxRequests(v *int64) (*int64, error) {
	switch {
	case v == nil || *v == 0:
		return nil, nil
	case *v < 0:
		return nil, invalid("max_requests", "must be null or 0 (unlimited) or a positive number")
	default:
		n := *v
		return &n, nil
	}
}

func checkLabel(label string) (string, error) {
	if err := checkText("label", label); err != nil {
		return "", err
	}
	label = strings.TrimSpace(label)
	if utf8.RuneCountInString(label) > maxLabelLen {
		return "", invalid("label", "must be at most %d characters", maxLabelLen)
	}
	return label, nil
}
