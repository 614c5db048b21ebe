package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// ProjectDir returns the project ID of (userID, root), creating the next
// "proj-<n>" on first use in one insert-or-select statement; the single
// writer serialises concurrent first uses.
func (db *DB) ProjectDir(ctx context.Context, userID, root string, at time.Time) (string, error) {
	var id string
	err := db.queryRow(ctx, db.writer, `INSERT INTO user_project_dirs (id, user_id, project_root, project_id, created_at)
		SELECT ?, ?, ?, 'proj-' || (coalesce(max(CAST(substr(project_id, 6) AS INTEGER)), 0) + 1), ?
		FROM user_project_dirs WHERE project_id GLOB 'proj-[0-9]*'
		ON CONFLICT (user_id, project_root) DO UPDATE SET user_id = excluded.user_id
		RETURNING project_id`, []any{uuid.NewString(), userID, root, timeArg(at)}, &id)
	if err != nil {
		return "", fmt.Errorf("map project root: %w", err)
	}
	return id, nil
}

// ListProjectDirs returns a page of project roots, oldest first.
func (db *DB) ListProjectDirs(ctx context.Context, f store.ProjectDirFilter) ([]*store.ProjectDir, int, error) {
	var w where
	if f.UserID != "" {
		w.add("user_id = ?", f.UserID)
	}
	limit, offset := page(f.Page)
	var (
		out   []*store.ProjectDir
		total int
	)
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := db.queryRow(ctx, tx, `SELECT COUNT(*) FROM user_project_dirs`+w.String(), w.args, &total); err != nil {
			return err
		}
		rows, err := db.query(ctx, tx, `SELECT user_id, project_root, project_id, created_at FROM user_project_dirs`+
			w.String()+` ORDER BY created_at, project_id LIMIT ? OFFSET ?`, append(w.args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d store.ProjectDir
			if err := rows.Scan(&d.UserID, &d.ProjectRoot, &d.ProjectID, timeCol{&d.CreatedAt}); err != nil {
				return err
			}
			out = append(out, &d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list project roots: %w", err)
	}
	return out, total, nil
}

const memorySessionCols = `user_id, session_id, project_id, project_root, upstream_project_id, model,
	last_transcript, last_activity, state, attempts, coalesce(locked_by, ''), locked_until, next_attempt_at,
	last_error, summary_version, created_at`

func memorySessionDest(s *store.MemorySession) []any {
	return []any{&s.UserID, &s.SessionID, &s.ProjectID, &s.ProjectRoot, &s.UpstreamProjectID, &s.Model,
		&s.Transcript, timeCol{&s.LastActivity}, &s.State, &s.Attempts, &s.LockedBy, nullTimeCol{&s.LockedUntil},
		nullTimeCol{&s.NextAttemptAt}, &s.LastError, &s.SummaryVersion, timeCol{&s.CreatedAt}}
}

func memorySessionArgs(s *store.MemorySession) []any {
	return []any{s.UserID, s.SessionID, s.ProjectID, s.ProjectRoot, s.UpstreamProjectID, s.Model, s.Transcript,
		timeArg(s.LastActivity), timeArg(s.CreatedAt)}
}

const memorySessionInsert = `INSERT INTO memory_sessions (user_id, session_id, project_id, project_root,
	upstream_project_id, model, last_transcript, last_activity, state, created_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)`

// StartMemorySession inserts s unless the session exists.
func (db *DB) StartMemorySession(ctx context.Context, s *store.MemorySession) (bool, error) {
	res, err := db.exec(ctx, db.writer, memorySessionInsert+` ON CONFLICT (user_id, session_id) DO NOTHING`,
		memorySessionArgs(s)...)
	if err != nil {
		return false, fmt.Errorf("start memory session: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("start memory session: %w", err)
	}
	return n == 1, nil
}

// SaveTranscript upserts a session's transcript unless a newer one is
// stored.
func (db *DB) SaveTranscript(ctx context.Context, s *store.MemorySession) error {
	_, err := db.exec(ctx, db.writer, memorySessionInsert+`
		ON CONFLICT (user_id, session_id) DO UPDATE SET project_id = excluded.project_id,
			project_root = excluded.project_root, upstream_project_id = excluded.upstream_project_id,
			model = excluded.model, last_transcript = excluded.last_transcript,
			last_activity = excluded.last_activity, state = 'active', attempts = 0,
			next_attempt_at = NULL, last_error = ''
		WHERE memory_sessions.last_activity <= excluded.last_activity`, memorySessionArgs(s)...)
	if err != nil {
		return fmt.Errorf("save transcript: %w", err)
	}
	return nil
}

// GetMemorySession loads one session; store.ErrNotFound when missing.
func (db *DB) GetMemorySession(ctx context.Context, userID, sessionID string) (*store.MemorySession, error) {
	var s store.MemorySession
	if err := db.queryRow(ctx, db.reader, `SELECT `+memorySessionCols+` FROM memory_sessions
		WHERE user_id = ? AND session_id = ?`, []any{userID, sessionID}, memorySessionDest(&s)...); err != nil {
		return nil, fmt.Errorf("load memory session: %w", err)
	}
	return &s, nil
}

// ClaimMemorySessions leases idle sessions; the single writer serialises
// claims.
func (db *DB) ClaimMemorySessions(ctx context.Context, cl store.MemoryClaim) ([]*store.MemorySession, error) {
	var out []*store.MemorySession
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := db.query(ctx, tx, `UPDATE memory_sessions SET locked_by = ?, locked_until = ?, attempts = attempts + 1
			WHERE rowid IN (SELECT rowid FROM memory_sessions
				WHERE state = 'active' AND last_transcript <> '' AND last_activity < ?
					AND (locked_until IS NULL OR locked_until <= ?)
					AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
				ORDER BY last_activity LIMIT ?)
			RETURNING `+memorySessionCols,
			cl.Worker, timeArg(cl.LeaseUntil), timeArg(cl.IdleBefore), timeArg(cl.Now), timeArg(cl.Now), cl.Limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s store.MemorySession
			if err := rows.Scan(memorySessionDest(&s)...); err != nil {
				return err
			}
			out = append(out, &s)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim memory sessions: %w", err)
	}
	return out, nil
}

// CompleteMemorySession stores a summary and releases the lease in one
// transaction.
func (db *DB) CompleteMemorySession(ctx context.Context, worker string, claimed time.Time, sum *store.SessionSummary) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `UPDATE memory_sessions SET
				state = CASE WHEN last_activity = ? THEN 'summarized' ELSE 'active' END,
				summary_version = ?, attempts = 0, locked_by = NULL, locked_until = NULL,
				next_attempt_at = NULL, last_error = ''
			WHERE user_id = ? AND session_id = ? AND locked_by = ?`,
			timeArg(claimed), sum.SummaryVersion, sum.UserID, sum.SessionID, worker)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(store.ErrLeaseLost, err)
		}
		_, err = db.exec(ctx, tx, `INSERT INTO session_summaries (id, user_id, project_id, project_root, session_id,
				session_start, backend_model, title, scope, goals, key_decisions, touched_files, tests_run, errors,
				remaining_tasks, completion_status, full_analysis, summary_version, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (user_id, session_id, summary_version) DO UPDATE SET project_id = excluded.project_id,
				project_root = excluded.project_root, backend_model = excluded.backend_model,
				title = excluded.title, scope = excluded.scope, goals = excluded.goals,
				key_decisions = excluded.key_decisions, touched_files = excluded.touched_files,
				tests_run = excluded.tests_run, errors = excluded.errors,
				remaining_tasks = excluded.remaining_tasks, completion_status = excluded.completion_status,
				full_analysis = excluded.full_analysis, created_at = excluded.created_at`,
			sum.ID, sum.UserID, sum.ProjectID, sum.ProjectRoot, sum.SessionID, nullTimeArg(sum.SessionStart),
			sum.BackendModel, sum.Title, sum.Scope, sum.Goals, sum.KeyDecisions, sum.TouchedFiles, sum.TestsRun,
			sum.Errors, sum.RemainingTasks, sum.CompletionStatus, sum.FullAnalysis, sum.SummaryVersion,
			timeArg(sum.CreatedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("complete memory session: %w", err)
	}
	return nil
}

// FailMemorySession records a failed attempt and releases the lease.
func (db *DB) FailMemorySession(ctx context.Context, f store.MemoryFailure) error {
	state, retry := store.MemoryActive, any(timeArg(f.RetryAt))
	if f.GiveUp {
		state, retry = store.MemoryFailed, nil
	}
	res, err := db.exec(ctx, db.writer, `UPDATE memory_sessions SET state = ?, last_error = ?, next_attempt_at = ?,
			locked_by = NULL, locked_until = NULL
		WHERE user_id = ? AND session_id = ? AND locked_by = ?`,
		state, f.Reason, retry, f.UserID, f.SessionID, f.Worker)
	if err != nil {
		return fmt.Errorf("fail memory session: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("fail memory session: %w", errors.Join(store.ErrLeaseLost, err))
	}
	return nil
}

// DeleteMemorySession deletes a session's transcript and summaries.
func (db *DB) DeleteMemorySession(ctx context.Context, userID, sessionID string) (int64, error) {
	var n int64
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		for _, table := range []string{"memory_sessions", "session_summaries"} {
			res, err := db.exec(ctx, tx, `DELETE FROM `+table+` WHERE user_id = ? AND session_id = ?`, userID, sessionID)
			if err != nil {
				return err
			}
			d, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += d
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete memory session: %w", err)
	}
	return n, nil
}

const summaryCols = `id, user_id, project_id, project_root, session_id, session_start, backend_model,
	title, scope, goals, key_decisions, touched_files, tests_run, errors, remaining_tasks, completion_status,
	full_analysis, summary_version, created_at`

func summaryDest(s *store.SessionSummary) []any {
	return []any{&s.ID, &s.UserID, &s.ProjectID, &s.ProjectRoot, &s.SessionID, nullTimeCol{&s.SessionStart},
		&s.BackendModel, &s.Title, &s.Scope, &s.Goals, &s.KeyDecisions, &s.TouchedFiles, &s.TestsRun, &s.Errors,
		&s.RemainingTasks, &s.CompletionStatus, &s.FullAnalysis, &s.SummaryVersion, timeCol{&s.CreatedAt}}
}

// GetSessionSummary loads one summary; store.ErrNotFound when missing.
func (db *DB) GetSessionSummary(ctx context.Context, id string) (*store.SessionSummary, error) {
	var s store.SessionSummary
	if err := db.queryRow(ctx, db.reader, `SELECT `+summaryCols+` FROM session_summaries WHERE id = ?`,
		[]any{id}, summaryDest(&s)...); err != nil {
		return nil, fmt.Errorf("load session summary: %w", err)
	}
	return &s, nil
}

// ListSessionSummaries returns a page of summaries, newest first.
func (db *DB) ListSessionSummaries(ctx context.Context, f store.SummaryFilter) ([]*store.SessionSummary, int, error) {
	var w where
	for _, c := range []struct{ col, v string }{
		{"user_id", f.UserID}, {"project_id", f.ProjectID}, {"session_id", f.SessionID},
	} {
		if c.v != "" {
			w.add(c.col+" = ?", c.v)
		}
	}
	limit, offset := page(f.Page)
	var (
		out   []*store.SessionSummary
		total int
	)
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := db.queryRow(ctx, tx, `SELECT COUNT(*) FROM session_summaries`+w.String(), w.args, &total); err != nil {
			return err
		}
		rows, err := db.query(ctx, tx, `SELECT `+summaryCols+` FROM session_summaries`+w.String()+
			` ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`, append(w.args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s store.SessionSummary
			if err := rows.Scan(summaryDest(&s)...); err != nil {
				return err
			}
			out = append(out, &s)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list session summaries: %w", err)
	}
	return out, total, nil
}

// DeleteSessionSummary deletes one summary.
func (db *DB) DeleteSessionSummary(ctx context.Context, id string) error {
	res, err := db.exec(ctx, db.writer, `DELETE FROM session_summaries WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete session summary: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("delete session summary: %w", errors.Join(store.ErrNotFound, err))
	}
	return nil
}

// DeleteSummariesBefore deletes the oldest summaries created before t.
func (db *DB) DeleteSummariesBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM session_summaries WHERE rowid IN
		(SELECT rowid FROM session_summaries WHERE created_at < ? ORDER BY created_at LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete old session summaries: %w", err)
	}
	return n, nil
}

// DeleteMemorySessionsBefore deletes the sessions idle since before t.
func (db *DB) DeleteMemorySessionsBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	n, err := db.deleteBatch(ctx, `DELETE FROM memory_sessions WHERE rowid IN
		(SELECT rowid FROM memory_sessions WHERE last_activity < ? ORDER BY last_activity LIMIT ?)`, t, limit)
	if err != nil {
		return 0, fmt.Errorf("delete old memory sessions: %w", err)
	}
	return n, nil
}
