CREATE TABLE agent_tokens (
    id                    TEXT PRIMARY KEY,
    token_hash            TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    provider              TEXT NOT NULL,
    subject               TEXT NOT NULL,
    email                 TEXT NOT NULL DEFAULT '',
    label                 TEXT NOT NULL DEFAULT '',
    is_active             INTEGER NOT NULL DEFAULT 1,
    created_at            TEXT NOT NULL,
    last_authenticated_at TEXT,
    auth_expires_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX agent_tokens_token_hash_key ON agent_tokens (token_hash);
CREATE INDEX agent_tokens_identity_idx ON agent_tokens (provider, subject);

CREATE TABLE pending_authorizations (
    id                 TEXT PRIMARY KEY,
    device_code_hash   TEXT NOT NULL,
    user_code_hash     TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    provider           TEXT NOT NULL DEFAULT '',
    subject            TEXT NOT NULL DEFAULT '',
    email              TEXT NOT NULL DEFAULT '',
    oidc_state         TEXT NOT NULL DEFAULT '',
    oidc_nonce         TEXT NOT NULL DEFAULT '',
    pkce_verifier      TEXT NOT NULL DEFAULT '',
    attempts_remaining INTEGER NOT NULL DEFAULT 5,
    client_ip          TEXT NOT NULL DEFAULT '',
    last_polled_at     TEXT,
    created_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL
);
CREATE UNIQUE INDEX pending_authorizations_device_code_hash_key ON pending_authorizations (device_code_hash);
CREATE UNIQUE INDEX pending_authorizations_user_code_hash_key ON pending_authorizations (user_code_hash);
CREATE INDEX pending_authorizations_expires_at_idx ON pending_authorizations (expires_at);

CREATE TABLE auth_rate_limits (
    identifier      TEXT PRIMARY KEY,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT NOT NULL,
    blocked_until   TEXT
);

CREATE TABLE user_project_dirs (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    project_root TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX user_project_dirs_user_root_key ON user_project_dirs (user_id, project_root);
CREATE UNIQUE INDEX user_project_dirs_project_id_key ON user_project_dirs (project_id);

CREATE TABLE session_summaries (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    tenant_id         TEXT NOT NULL DEFAULT '',
    project_id        TEXT NOT NULL DEFAULT '',
    project_root      TEXT NOT NULL DEFAULT '',
    session_id        TEXT NOT NULL,
    session_start     TEXT,
    client_agent      TEXT NOT NULL DEFAULT '',
    backend_model     TEXT NOT NULL DEFAULT '',
    title             TEXT NOT NULL DEFAULT '',
    scope             TEXT NOT NULL DEFAULT '',
    goals             TEXT NOT NULL DEFAULT '',
    key_decisions     TEXT NOT NULL DEFAULT '',
    touched_files     TEXT NOT NULL DEFAULT '',
    tests_run         TEXT NOT NULL DEFAULT '',
    errors            TEXT NOT NULL DEFAULT '',
    remaining_tasks   TEXT NOT NULL DEFAULT '',
    completion_status TEXT NOT NULL DEFAULT '',
    full_analysis     TEXT NOT NULL DEFAULT '',
    summary_version   INTEGER NOT NULL DEFAULT 1,
    created_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX session_summaries_session_version_key ON session_summaries (session_id, summary_version);
CREATE INDEX session_summaries_user_project_idx ON session_summaries (user_id, project_id, created_at);

CREATE TABLE memory_sessions (
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
CREATE INDEX memory_sessions_state_activity_idx ON memory_sessions (state, last_activity);
