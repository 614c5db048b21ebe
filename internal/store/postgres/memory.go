package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// maxProjectDirTries bounds ProjectDir's retries: two first uses of
// different roots at once may pick the same next number, and the unique
// index makes the later one try again.
const maxProjectDirTries = 20

// ProjectDir returns the project ID of (userID, root), creating the next
// "proj-<n>" on first use. The insert-or-select is one statement: a
// concurrent first use of the same root waits on the unique index and
// then takes the ON CONFLICT branch, which returns the stored ID.
func (db *DB) ProjectDir(ctx context.Context, userID, root string, at time.Time) (string, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer c.Release()
	for range maxProjectDirTries {
		var id string
		err := c.QueryRow(ctx, `INSERT INTO user_project_dirs (id, user_id, project_root, project_id, created_at)
			SELECT $1, $2, $3, 'proj-' || (coalesce(max(substr(project_id, 6)::bigint), 0) + 1), $4
			FROM user_project_dirs WHERE project_id ~ '^proj-[0-9]{1,18}$'
			ON CONFLICT (user_id, project_root) DO UPDATE SET user_id = EXCLUDED.user_id
			RETURNING project_id`, uuid.New(), userID, root, at).Scan(&id)
		if err == nil {
			return id, nil
		}
		if err = translate(err); !errors.Is(err, store.ErrConflict) {
			return "", fmt.Errorf("map project root: %w", err)
		}
	}
	return "", fmt.Errorf("map project root: %w (too many concurrent new roots)", store.ErrConflict)
}

// ListProjectDirs returns a page of project roots, oldest first.
func (db *DB) ListProjectDirs(ctx context.Context, f store.ProjectDirFilter) ([]*store.ProjectDir, int, error) {
	var q query
	if f.UserID != "" {
		q.where(`user_id = ?`, f.UserID)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer c.Release()
	var total int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM user_project_dirs`+q.clause(), q.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count project roots: %w", translate(err))
	}
	limit, args := q.page(f.Page)
	rows, err := c.Query(ctx, `SELECT user_id, project_root, project_id, created_at FROM user_project_dirs`+
		q.clause()+` ORDER BY created_at, project_id`+limit, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list project roots: %w", translate(err))
	}
	dirs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.ProjectDir, error) {
		var d store.ProjectDir
		err := r.Scan(&d.UserID, &d.ProjectRoot, &d.ProjectID, &d.CreatedAt)
		d.CreatedAt = d.CreatedAt.UTC()
		return &d, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list project roots: %w", translate(err))
	}
	return dirs, total, nil
}

const memorySessionSelect = `SELECT user_id, session_id, project_id, project_root, upstream_project_id, model,
	last_transcript, last_activity, state, attempts, coalesce(locked_by, ''), locked_until, next_attempt_at,
	last_error, summary_version, created_at FROM memory_sessions`

func scanMemorySession(row pgx.Row) (*store.MemorySession, error) {
	var s store.MemorySession
	err := row.Scan(&s.UserID, &s.SessionID, &s.ProjectID, &s.ProjectRoot, &s.UpstreamProjectID, &s.Model,
		&s.Transcript, &s.LastActivity, &s.State, &s.Attempts, &s.LockedBy, &s.LockedUntil, &s.NextAttemptAt,
		&s.LastError, &s.SummaryVersion, &s.CreatedAt)
	if err != nil {
		return nil, err
	}
	s.LastActivity, s.CreatedAt = s.LastActivity.UTC(), s.CreatedAt.UTC()
	s.LockedUntil, s.NextAttemptAt = utcPtr(s.LockedUntil), utcPtr(s.NextAttemptAt)
	return &s, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// StartMemorySession inserts s unless the session exists.
func (db *DB) StartMemorySession(ctx context.Context, s *store.MemorySession) (bool, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `INSERT INTO memory_sessions (user_id, session_id, project_id, project_root,
		upstream_project_id, model, last_transcript, last_activity, state, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9) ON CONFLICT (user_id, session_id) DO NOTHING`,
		s.UserID, s.SessionID, s.ProjectID, s.ProjectRoot, s.UpstreamProjectID, s.Model, s.Transcript,
		s.LastActivity, s.CreatedAt)
	if err != nil {
		return false, fmt.Errorf("start memory session: %w", translate(err))
	}
	return tag.RowsAffected() == 1, nil
}

// SaveTranscript upserts a session's transcript unless a newer one is
// stored.
func (db *DB) SaveTranscript(ctx context.Context, s *store.MemorySession) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `INSERT INTO memory_sessions (user_id, session_id, project_id, project_root,
		upstream_project_id, model, last_transcript, last_activity, state, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9)
		ON CONFLICT (user_id, session_id) DO UPDATE SET project_id = EXCLUDED.project_id,
			project_root = EXCLUDED.project_root, upstream_project_id = EXCLUDED.upstream_project_id,
			model = EXCLUDED.model, last_transcript = EXCLUDED.last_transcript,
			last_activity = EXCLUDED.last_activity, state = 'active', attempts = 0,
			next_attempt_at = NULL, last_error = ''
		WHERE memory_sessions.last_activity <= EXCLUDED.last_activity`,
		s.UserID, s.SessionID, s.ProjectID, s.ProjectRoot, s.UpstreamProjectID, s.Model, s.Transcript,
		s.LastActivity, s.CreatedAt)
	if err != nil {
		return fmt.Errorf("save transcript: %w", translate(err))
	}
	return nil
}

// GetMemorySession loads one session; store.ErrNotFound when missing.
func (db *DB) GetMemorySession(ctx context.Context, userID, sessionID string) (*store.MemorySession, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	s, err := scanMemorySession(c.QueryRow(ctx, memorySessionSelect+` WHERE user_id = $1 AND session_id = $2`,
		userID, sessionID))
	if err != nil {
		return nil, fmt.Errorf("load memory session: %w", translate(err))
	}
	return s, nil
}

// ClaimMemorySessions leases idle sessions with FOR UPDATE SKIP LOCKED, so
// replicas claiming at once never get the same one.
func (db *DB) ClaimMemorySessions(ctx context.Context, cl store.MemoryClaim) ([]*store.MemorySession, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, `UPDATE memory_sessions m SET locked_by = $1, locked_until = $2, attempts = attempts + 1
		FROM (SELECT user_id, session_id FROM memory_sessions
			WHERE state = 'active' AND last_transcript <> '' AND last_activity < $3
				AND (locked_until IS NULL OR locked_until <= $4)
				AND (next_attempt_at IS NULL OR next_attempt_at <= $4)
			ORDER BY last_activity LIMIT $5 FOR UPDATE SKIP LOCKED) picked
		WHERE m.user_id = picked.user_id AND m.session_id = picked.session_id
		RETURNING m.user_id, m.session_id, m.project_id, m.project_root, m.upstream_project_id, m.model,
			m.last_transcript, m.last_activity, m.state, m.attempts, coalesce(m.locked_by, ''), m.locked_until,
			m.next_attempt_at, m.last_error, m.summary_version, m.created_at`,
		cl.Worker, cl.LeaseUntil, cl.IdleBefore, cl.Now, cl.Limit)
	if err != nil {
		return nil, fmt.Errorf("claim memory sessions: %w", translate(err))
	}
	sessions, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.MemorySession, error) { return scanMemorySession(r) })
	if err != nil {
		return nil, fmt.Errorf("claim memory sessions: %w", translate(err))
	}
	return sessions, nil
}

// CompleteMemorySession stores a summary and releases the lease in one
// transaction.
func (db *DB) CompleteMemorySession(ctx context.Context, worker string, claimed time.Time, sum *store.SessionSummary) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE memory_sessions SET
				state = CASE WHEN last_activity = $4 THEN 'summarized' ELSE 'active' END,
				summary_version = $5, attempts = 0, locked_by = NULL, locked_until = NULL,
				next_attempt_at = NULL, last_error = ''
			WHERE user_id = $1 AND session_id = $2 AND locked_by = $3`,
			sum.UserID, sum.SessionID, worker, claimed, sum.SummaryVersion)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrLeaseLost
		}
		_, err = tx.Exec(ctx, `INSERT INTO session_summaries (id, user_id, project_id, project_root, session_id,
				session_start, backend_model, title, scope, goals, key_decisions, touched_files, tests_run, errors,
				remaining_tasks, completion_status, full_analysis, summary_version, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
			ON CONFLICT (user_id, session_id, summary_version) DO UPDATE SET project_id = EXCLUDED.project_id,
				project_root = EXCLUDED.project_root, backend_model = EXCLUDED.backend_model,
				title = EXCLUDED.title, scope = EXCLUDED.scope, goals = EXCLUDED.goals,
				key_decisions = EXCLUDED.key_decisions, touched_files = EXCLUDED.touched_files,
				tests_run = EXCLUDED.tests_run, errors = EXCLUDED.errors,
				remaining_tasks = EXCLUDED.remaining_tasks, completion_status = EXCLUDED.completion_status,
				full_analysis = EXCLUDED.full_analysis, created_at = EXCLUDED.created_at`,
			sum.ID, sum.UserID, sum.ProjectID, sum.ProjectRoot, sum.SessionID, sum.SessionStart, sum.BackendModel,
			sum.Title, sum.Scope, sum.Goals, sum.KeyDecisions, sum.TouchedFiles, sum.TestsRun, sum.Errors,
			sum.RemainingTasks, sum.CompletionStatus, sum.FullAnalysis, sum.SummaryVersion, sum.CreatedAt)
		return err
	})
	if errors.Is(err, store.ErrLeaseLost) {
		return fmt.Errorf("complete memory session: %w", err)
	}
	if err != nil {
		return fmt.Errorf("complete memory session: %w", translate(err))
	}
	return nil
}

// FailMemorySession records a failed attempt and releases the lease.
func (db *DB) FailMemorySession(ctx context.Context, f store.MemoryFailure) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	state := store.MemoryActive
	var retry *time.Time
	if f.GiveUp {
		state = store.MemoryFailed
	} else {
		retry = &f.RetryAt
	}
	tag, err := c.Exec(ctx, `UPDATE memory_sessions SET state = $4, last_error = $5, next_attempt_at = $6,
			locked_by = NULL, locked_until = NULL
		WHERE user_id = $1 AND session_id = $2 AND locked_by = $3`,
		f.UserID, f.SessionID, f.Worker, state, f.Reason, retry)
	if err != nil {
		return fmt.Errorf("fail memory session: %w", translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("fail memory session: %w", store.ErrLeaseLost)
	}
	return nil
}

// DeleteMemorySession deletes a session's transcript and summaries.
func (db *DB) DeleteMemorySession(ctx context.Context, userID, sessionID string) (int64, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	var n int64
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for _, table := range []string{"memory_sessions", "session_summaries"} {
			tag, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND session_id = $2`, userID, sessionID)
			if err != nil {
				return err
			}
			n += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete memory session: %w", translate(err))
	}
	return n, nil
}

const summarySelect = `SELECT id, user_id, project_id, project_root, session_id, session_start, backend_model,
	title, scope, goals, key_decisions, touched_files, tests_run, errors, remaining_tasks, completion_status,
	full_analysis, summary_version, created_at FROM session_summaries`

func scanSummary(row pgx.Row) (*store.SessionSummary, error) {
	var s store.SessionSummary
	err := row.Scan(&s.ID, &s.UserID, &s.ProjectID, &s.ProjectRoot, &s.SessionID, &s.SessionStart, &s.BackendModel,
		&s.Title, &s.Scope, &s.Goals, &s.KeyDecisions, &s.TouchedFiles, &s.TestsRun, &s.Errors, &s.RemainingTasks,
		&s.CompletionStatus, &s.FullAnalysis, &s.SummaryVersion, &s.CreatedAt)
	if err != nil {
		return nil, err
	}
	s.CreatedAt = s.CreatedAt.UTC()
	s.SessionStart = utcPtr(s.SessionStart)
	return &s, nil
}

// GetSessionSummary loads one summary; store.ErrNotFound when missing.
func (db *DB) GetSessionSummary(ctx context.Context, id string) (*store.SessionSummary, error) {
	if !isUUID(id) {
		return nil, fmt.Errorf("load session summary: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	s, err := scanSummary(c.QueryRow(ctx, summarySelect+` WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("load session summary: %w", translate(err))
	}
	return s, nil
}

// ListSessionSummaries returns a page of summaries, newest first.
func (db *DB) ListSessionSummaries(ctx context.Context, f store.SummaryFilter) ([]*store.SessionSummary, int, error) {
	var q query
	if f.UserID != "" {
		q.where(`user_id = ?`, f.UserID)
	}
	if f.ProjectID != "" {
		q.where(`project_id = ?`, f.ProjectID)
	}
	if f.SessionID != "" {
		q.where(`session_id = ?`, f.SessionID)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer c.Release()
	var total int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM session_summaries`+q.clause(), q.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count session summaries: %w", translate(err))
	}
	limit, args := q.page(f.Page)
	rows, err := c.Query(ctx, summarySelect+q.clause()+` ORDER BY created_at DESC, id DESC`+limit, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list session summaries: %w", translate(err))
	}
	sums, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.SessionSummary, error) { return scanSummary(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list session summaries: %w", translate(err))
	}
	return sums, total, nil
}

// DeleteSessionSummary deletes one summary.
func (db *DB) DeleteSessionSummary(ctx context.Context, id string) error {
	if !isUUID(id) {
		return fmt.Errorf("delete session summary: %w", store.ErrNotFound)
	}
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, `DELETE FROM session_summaries WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete session summary: %w", translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete session summary: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteSummariesBefore deletes the oldest summaries created before t.
func (db *DB) DeleteSummariesBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM session_summaries WHERE id IN
		(SELECT id FROM session_summaries WHERE created_at < $1 ORDER BY created_at LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete old session summaries: %w", err)
	}
	return n, nil
}

// DeleteMemorySessionsBefore deletes the sessions idle since before t.
func (db *DB) DeleteMemorySessionsBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM memory_sessions WHERE (user_id, session_id) IN
		(SELECT user_id, session_id FROM memory_sessions WHERE last_activity < $1 ORDER BY last_activity LIMIT $2)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete old memory sessions: %w", err)
	}
	return n, nil
}
