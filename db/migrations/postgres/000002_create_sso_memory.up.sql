CREATE TABLE agent_tokens (
    id                    uuid PRIMARY KEY,
    token_hash            text NOT NULL,
    prefix                text NOT NULL,
    provider              text NOT NULL,
    subject               text NOT NULL,
    email                 text NOT NULL DEFAULT '',
    label                 text NOT NULL DEFAULT '',
    is_active             boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL,
    last_authenticated_at timestamptz,
    auth_expires_at       timestamptz NOT NULL
);
CREATE UNIQUE INDEX agent_tokens_token_hash_key ON agent_tokens (token_hash);
CREATE INDEX agent_tokens_identity_idx ON agent_tokens (provider, subject);

CREATE TABLE pending_authorizations (
    id                 uuid PRIMARY KEY,
    device_code_hash   text NOT NULL,
    user_code_hash     text NOT NULL,
    status             text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    provider           text NOT NULL DEFAULT '',
    subject            text NOT NULL DEFAULT '',
    email              text NOT NULL DEFAULT '',
    oidc_state         text NOT NULL DEFAULT '',
    oidc_nonce         text NOT NULL DEFAULT '',
    pkce_verifier      text NOT NULL DEFAULT '',
    attempts_remaining integer NOT NULL DEFAULT 5,
    client_ip          text NOT NULL DEFAULT '',
    last_polled_at     timestamptz,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL
);
CREATE UNIQUE INDEX pending_authorizations_device_code_hash_key ON pending_authorizations (device_code_hash);
CREATE UNIQUE INDEX pending_authorizations_user_code_hash_key ON pending_authorizations (user_code_hash);
CREATE INDEX pending_authorizations_expires_at_idx ON pending_authorizations (expires_at);

CREATE TABLE auth_rate_limits (
    identifier      text PRIMARY KEY,
    failed_attempts integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz NOT NULL,
    blocked_until   timestamptz
);

CREATE TABLE user_project_dirs (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL,
    project_root text NOT NULL,
    project_id   text NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX user_project_dirs_user_root_key ON user_project_dirs (user_id, project_root);
CREATE UNIQUE INDEX user_project_dirs_project_id_key ON user_project_dirs (project_id);

CREATE TABLE session_summaries (
    id                uuid PRIMARY KEY,
    user_id           text NOT NULL,
    tenant_id         text NOT NULL DEFAULT '',
    project_id        text NOT NULL DEFAULT '',
    project_root      text NOT NULL DEFAULT '',
    session_id        text NOT NULL,
    session_start     timestamptz,
    client_agent      text NOT NULL DEFAULT '',
    backend_model     text NOT NULL DEFAULT '',
    title             text NOT NULL DEFAULT '',
    scope             text NOT NULL DEFAULT '',
    goals             text NOT NULL DEFAULT '',
    key_decisions     text NOT NULL DEFAULT '',
    touched_files     text NOT NULL DEFAULT '',
    tests_run         text NOT NULL DEFAULT '',
    errors            text NOT NULL DEFAULT '',
    remaining_tasks   text NOT NULL DEFAULT '',
    completion_status text NOT NULL DEFAULT '',
    full_analysis     text NOT NULL DEFAULT '',
    summary_version   integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL
);
CREATE UNIQUE INDEX session_summaries_session_version_key ON session_summaries (session_id, summary_version);
CREATE INDEX session_summaries_user_project_idx ON session_summaries (user_id, project_id, created_at);

CREATE TABLE memory_sessions (
    session_id      text PRIMARY KEY,
    user_id         text NOT NULL,
    project_id      text NOT NULL DEFAULT '',
    project_root    text NOT NULL DEFAULT '',
    last_transcript text NOT NULL DEFAULT '',
    last_activity   timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'active',
    attempts        integer NOT NULL DEFAULT 0,
    locked_by       text,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL
);
CREATE INDEX memory_sessions_state_activity_idx ON memory_sessions (state, last_activity);
