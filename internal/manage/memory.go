package manage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// MemoryQuery selects session summaries (newest first) or project roots
// (oldest first). Empty fields do not filter.
type MemoryQuery struct {
	UserID    string
	ProjectID string
	SessionID string
	PageQuery
}

// ListProjectDirs returns one page of the user → project root → project
// ID mappings (SPEC §6.6).
func (s *Service) ListProjectDirs(ctx context.Context, q MemoryQuery) (*List[*store.ProjectDir], error) {
	page, err := q.resolve()
	if err != nil {
		return nil, err
	}
	items, total, err := s.store.ListProjectDirs(ctx, store.ProjectDirFilter{UserID: q.UserID, Page: page})
	if err != nil {
		return nil, fmt.Errorf("list project roots: %w", err)
	}
	return &List[*store.ProjectDir]{Items: items, Page: page, Total: total}, nil
}

// ListSummaries returns one page of session summaries.
func (s *Service) ListSummaries(ctx context.Context, q MemoryQuery) (*List[*store.SessionSummary], error) {
	page, err := q.resolve()
	if err != nil {
		return nil, err
	}
	items, total, err := s.store.ListSessionSummaries(ctx, store.SummaryFilter{UserID: q.UserID,
		ProjectID: q.ProjectID, SessionID: q.SessionID, Page: page})
	if err != nil {
		return nil, fmt.Errorf("list session summaries: %w", err)
	}
	return &List[*store.SessionSummary]{Items: items, Page: page, Total: total}, nil
}

// GetSummary returns one summary, or store.ErrNotFound.
func (s *Service) GetSummary(ctx context.Context, id string) (*store.SessionSummary, error) {
	sum, err := s.store.GetSessionSummary(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load session summary: %w", err)
	}
	return sum, nil
}

// DeleteSummary deletes one summary, or returns store.ErrNotFound.
func (s *Service) DeleteSummary(ctx context.Context, id string) error {
	if err := s.store.DeleteSessionSummary(ctx, id); err != nil {
		return fmt.Errorf("delete session summary: %w", err)
	}
	return nil
}

// DeleteSession deletes everything memory keeps of one session of a user
// (its transcript and every summary); store.ErrNotFound when there was
// nothing.
func (s *Service) DeleteSession(ctx context.Context, userID, sessionID string) error {
	if strings.TrimSpace(userID) == "" {
		return invalid("user_id", "is required")
	}
	n, err := s.store.DeleteMemorySession(ctx, userID, sessionID)
	if err != nil {
		return fmt.Errorf("delete memory session: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("delete memory session: %w", store.ErrNotFound)
	}
	return nil
}

// ProjectDirView is the JSON form of a project root mapping.
type ProjectDirView struct {
	UserID      string    `json:"user_id"`
	ProjectRoot string    `json:"project_root"`
	ProjectID   string    `json:"project_id"`
	CreatedAt   time.Time `json:"created_at"`
}

// NewProjectDirView renders d.
func NewProjectDirView(d *store.ProjectDir) ProjectDirView {
	return ProjectDirView{UserID: d.UserID, ProjectRoot: d.ProjectRoot, ProjectID: d.ProjectID, CreatedAt: d.CreatedAt}
}

// SummaryView is the JSON form of a session summary; list fields are
// arrays.
type SummaryView struct {
	ID               string     `json:"id"`
	UserID           string     `json:"user_id"`
	ProjectID        string     `json:"project_id"`
	ProjectRoot      string     `json:"project_root"`
	SessionID        string     `json:"session_id"`
	SessionStart     *time.Time `json:"session_start"`
	BackendModel     string     `json:"backend_model"`
	Title            string     `json:"title"`
	Scope            string     `json:"scope"`
	Goals            []string   `json:"goals"`
	KeyDecisions     []string   `json:"key_decisions"`
	TouchedFiles     []string   `json:"touched_files"`
	TestsRun         []string   `json:"tests_run"`
	Errors           []string   `json:"errors"`
	RemainingTasks   []string   `json:"remaining_tasks"`
	CompletionStatus string     `json:"completion_status"`
	FullAnalysis     string     `json:"full_analysis,omitempty"`
	SummaryVersion   int        `json:"summary_version"`
	CreatedAt        time.Time  `json:"created_at"`
}

// NewSummaryView renders s with its raw analysis.
func NewSummaryView(s *store.SessionSummary) SummaryView {
	v := NewSummaryListView(s)
	v.FullAnalysis = s.FullAnalysis
	return v
}

// NewSummaryListView renders s without its raw analysis (lists stay
// small).
func NewSummaryListView(s *store.SessionSummary) SummaryView {
	lines := func(v string) []string {
		out := []string{}
		for l := range strings.SplitSeq(v, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	return SummaryView{ID: s.ID, UserID: s.UserID, ProjectID: s.ProjectID, ProjectRoot: s.ProjectRoot,
		SessionID: s.SessionID, SessionStart: s.SessionStart, BackendModel: s.BackendModel, Title: s.Title,
		Scope: s.Scope, Goals: lines(s.Goals), KeyDecisions: lines(s.KeyDecisions), TouchedFiles: lines(s.TouchedFiles),
		TestsRun: lines(s.TestsRun), Errors: lines(s.Errors), RemainingTasks: lines(s.RemainingTasks),
		CompletionStatus: s.CompletionStatus, SummaryVersion: s.SummaryVersion, CreatedAt: s.CreatedAt}
}
