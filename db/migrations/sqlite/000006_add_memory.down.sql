-- Going back to one row per session ID keeps the first user's rows of an ID
-- that several users share.
DELETE FROM session_summaries WHERE EXISTS (
    SELECT 1 FROM session_summaries b WHERE b.session_id = session_summaries.session_id
        AND b.summary_version = session_summaries.summary_version AND b.user_id < session_summaries.user_id);
DROP INDEX session_summaries_user_session_version_key;
CREATE UNIQUE INDEX session_summaries_session_version_key ON session_summaries (session_id, summary_version);

CREATE TABLE memory_sessions_old (
    session_id      TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    project_id      TEXT NOT NULL DEFAULT '',
    project_root    TEXT NOT NULL DEFAULT '',
    last_transcript TEXT NOT NULL DEFAULT '',
    last_activity   TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'active',
    attempts        INTEGER NOT NULL DEFAULT 0,
    locked_by       TEXT,
    locked_until    TEXT,
    created_at      TEXT NOT NULL
);
INSERT OR IGNORE INTO memory_sessions_old (session_id, user_id, project_id, project_root, last_transcript,
        last_activity, state, attempts, locked_by, locked_until, created_at)
    SELECT session_id, user_id, project_id, project_root, last_transcript, last_activity,
        state, attempts, locked_by, locked_until, created_at
    FROM memory_sessions ORDER BY user_id;
DROP TABLE memory_sessions;
ALTER TABLE memory_sessions_old RENAME TO memory_sessions;
CREATE INDEX memory_sessions_state_activity_idx ON memory_sessions (state, last_activity);

ALTER TABLE usage DROP COLUMN purpose;
