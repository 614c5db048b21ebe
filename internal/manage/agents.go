package manage

import (
	"context"
	"fmt"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// AgentTokenQuery selects agent tokens; empty or nil fields do not filter.
// Email matches without regard to case.
type AgentTokenQuery struct {
	Email  string
	Active *bool
	PageQuery
}

// ListAgentTokens returns one page of agent tokens, newest first.
func (s *Service) ListAgentTokens(ctx context.Context, q AgentTokenQuery) (*List[*store.AgentToken], error) {
	if len(q.Email) > 320 {
		return nil, invalid("email", "must be at most 320 bytes")
	}
	page, err := q.resolve()
	if err != nil {
		return nil, err
	}
	items, total, err := s.store.ListAgentTokens(ctx, store.AgentTokenFilter{Email: q.Email, Active: q.Active, Page: page})
	if err != nil {
		return nil, fmt.Errorf("list agent tokens: %w", err)
	}
	return &List[*store.AgentToken]{Items: items, Page: page, Total: total}, nil
}

// RevokeAgentToken deactivates the agent token with id and invalidates it
// on every replica. Revoking a revoked token succeeds; an unknown id is
// store.ErrNotFound.
func (s *Service) RevokeAgentToken(ctx context.Context, id string) (*store.AgentToken, error) {
	a, err := s.store.GetAgentToken(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load agent token: %w", err)
	}
	if a.IsActive {
		if err := s.store.RevokeAgentToken(ctx, id); err != nil {
			return nil, fmt.Errorf("revoke agent token: %w", err)
		}
		a.IsActive = false
		s.logger.InfoContext(ctx, "agent token revoked", "agent_token_id", a.ID)
	}
	s.inval.InvalidateToken(a.ID)
	return a, nil
}

// AgentTokenView is an agent token as operators see it: its display
// prefix, never its secret or hash. UserID is the person (provider and
// subject) as usage rows name it.
type AgentTokenView struct {
	ID                  string     `json:"id"`
	Prefix              string     `json:"prefix"`
	Label               string     `json:"label"`
	Provider            string     `json:"provider"`
	Subject             string     `json:"subject"`
	UserID              string     `json:"user_id"`
	Email               string     `json:"email"`
	IsActive            bool       `json:"is_active"`
	CreatedAt           time.Time  `json:"created_at"`
	LastAuthenticatedAt *time.Time `json:"last_authenticated_at"`
	ExpiresAt           time.Time  `json:"expires_at"`
}

// NewAgentTokenView returns the view of a.
func NewAgentTokenView(a *store.AgentToken) AgentTokenView {
	return AgentTokenView{ID: a.ID, Prefix: a.Prefix, Label: a.Label, Provider: a.Provider, Subject: a.Subject,
		UserID: a.UserID(), Email: a.Email, IsActive: a.IsActive, CreatedAt: a.CreatedAt,
		LastAuthenticatedAt: a.LastAuthenticatedAt, ExpiresAt: a.AuthExpiresAt}
}
