-- Times are TEXT in UTC, "2006-01-02T15:04:05.000000Z" (fixed width, so they
-- sort as strings); booleans are INTEGER 0/1; UUIDs are TEXT.
CREATE TABLE projects (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    provider          TEXT NOT NULL,
    base_url          TEXT NOT NULL,
    api_version       TEXT NOT NULL DEFAULT '',
    api_key_encrypted BLOB NOT NULL,
    api_key_hint      TEXT NOT NULL DEFAULT '',
    is_active         INTEGER NOT NULL DEFAULT 1,
    deactivated_at    TEXT,
    rpm_limit         INTEGER NOT NULL DEFAULT 0,
    tpm_limit         INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX projects_name_key ON projects (name);

CREATE TABLE tokens (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL REFERENCES projects (id),
    token_hash     TEXT NOT NULL,
    prefix         TEXT NOT NULL,
    label          TEXT NOT NULL DEFAULT '',
    expires_at     TEXT NOT NULL,
    max_requests   INTEGER,
    request_count  INTEGER NOT NULL DEFAULT 0,
    is_active      INTEGER NOT NULL DEFAULT 1,
    deactivated_at TEXT,
    rpm_limit      INTEGER NOT NULL DEFAULT 0,
    tpm_limit      INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    last_used_at   TEXT
);
CREATE UNIQUE INDEX tokens_token_hash_key ON tokens (token_hash);
CREATE INDEX tokens_project_id_idx ON tokens (project_id);
CREATE INDEX tokens_expires_at_idx ON tokens (expires_at);

CREATE TABLE usage (
    id                TEXT PRIMARY KEY,
    created_at        TEXT NOT NULL,
    request_id        TEXT NOT NULL,
    project_id        TEXT,
    token_id          TEXT,
    agent_token_id    TEXT,
    user_id           TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    endpoint          TEXT NOT NULL,
    status            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    latency_ms        INTEGER NOT NULL DEFAULT 0,
    ttfb_ms           INTEGER NOT NULL DEFAULT 0,
    streamed          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_created_at_idx ON usage (created_at);
CREATE INDEX usage_project_id_created_at_idx ON usage (project_id, created_at);
CREATE INDEX usage_token_id_created_at_idx ON usage (token_id, created_at);

CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied', 'error')),
    project_id TEXT,
    token_id   TEXT,
    request_id TEXT NOT NULL DEFAULT '',
    client_ip  TEXT NOT NULL DEFAULT '',
    method     TEXT NOT NULL DEFAULT '',
    path       TEXT NOT NULL DEFAULT '',
    reason     TEXT NOT NULL DEFAULT '',
    metadata   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id);
CREATE INDEX audit_events_action_idx ON audit_events (action);
