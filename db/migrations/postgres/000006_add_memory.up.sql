-- Cross-session memory (SPEC §6.6, issue #12).
--
-- Usage rows say why they were made: "client" for proxied requests,
-- "memory" for the summariser's own upstream calls.
ALTER TABLE usage ADD COLUMN purpose text NOT NULL DEFAULT 'client';

-- A session ID is chosen by the client, so it is unique per user only:
-- two users naming their sessions alike must never share a transcript or a
-- summary.
ALTER TABLE memory_sessions DROP CONSTRAINT memory_sessions_pkey;
ALTER TABLE memory_sessions ADD PRIMARY KEY (user_id, session_id);
-- upstream_project_id: whose upstream summarises the session (and is
-- billed for it); model: the session's last model; summary_version: the
-- last version written; next_attempt_at, last_error: the retry back-off
-- and why the last attempt failed.
ALTER TABLE memory_sessions
    ADD COLUMN upstream_project_id text NOT NULL DEFAULT '',
    ADD COLUMN model               text NOT NULL DEFAULT '',
    ADD COLUMN summary_version     integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at     timestamptz,
    ADD COLUMN last_error          text NOT NULL DEFAULT '';

DROP INDEX session_summaries_session_version_key;
CREATE UNIQUE INDEX session_summaries_user_session_version_key ON session_summaries (user_id, session_id, summary_version);
