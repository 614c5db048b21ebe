-- Cross-session memory (SPEC §6.6, issue #12); see the PostgreSQL
-- migration for the reasons. SQLite cannot change a primary key in place,
-- so memory_sessions is rebuilt.
ALTER TABLE usage ADD COLUMN purpose TEXT NOT NULL DEFAULT 'client';

CREATE TABLE memory_sessions_new (
    session_id          TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    project_id          TEXT NOT NULL DEFAULT '',
    project_root        TEXT NOT NULL DEFAULT '',
    last_transcript     TEXT NOT NULL DEFAULT '',
    last_activity       TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'active',
    attempts            INTEGER NOT NULL DEFAULT 0,
    locked_by           TEXT,
    locked_until        TEXT,
    created_at          TEXT NOT NULL,
    upstream_project_id TEXT NOT NULL DEFAULT '',
    model               TEXT NOT NULL DEFAULT '',
    summary_version     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT,
    last_error          TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, session_id)
);
INSERT INTO memory_sessions_new (session_id, user_id, project_id, project_root, last_transcript, last_activity,
        state, attempts, locked_by, locked_until, created_at)
    SELECT session_id, user_id, project_id, project_root, last_transcript, last_activity,
        state, attempts, locked_by, locked_until, created_at
    FROM memory_sessions;
DROP TABLE memory_sessions;
ALTER TABLE memory_sessions_new RENAME TO memory_sessions;
CREATE INDEX memory_sessions_state_activity_idx ON memory_sessions (state, last_activity);

DROP INDEX session_summaries_session_version_key;
CREATE UNIQUE INDEX session_summaries_user_session_version_key ON session_summaries (user_id, session_id, summary_version);
