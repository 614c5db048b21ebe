-- Going back to one row per session ID keeps the first user's rows of an ID
-- that several users share.
DELETE FROM session_summaries a USING session_summaries b
    WHERE a.session_id = b.session_id AND a.summary_version = b.summary_version AND a.user_id > b.user_id;
DROP INDEX session_summaries_user_session_version_key;
CREATE UNIQUE INDEX session_summaries_session_version_key ON session_summaries (session_id, summary_version);

DELETE FROM memory_sessions a USING memory_sessions b
    WHERE a.session_id = b.session_id AND a.user_id > b.user_id;
ALTER TABLE memory_sessions
    DROP COLUMN last_error,
    DROP COLUMN next_attempt_at,
    DROP COLUMN summary_version,
    DROP COLUMN model,
    DROP COLUMN upstream_project_id;
ALTER TABLE memory_sessions DROP CONSTRAINT memory_sessions_pkey;
ALTER TABLE memory_sessions ADD PRIMARY KEY (session_id);

ALTER TABLE usage DROP COLUMN purpose;
