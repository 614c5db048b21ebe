CREATE TABLE projects (
    id                uuid PRIMARY KEY,
    name              text NOT NULL,
    provider          text NOT NULL,
    base_url          text NOT NULL,
    api_version       text NOT NULL DEFAULT '',
    api_key_encrypted bytea NOT NULL,
    api_key_hint      text NOT NULL DEFAULT '',
    is_active         boolean NOT NULL DEFAULT true,
    deactivated_at    timestamptz,
    rpm_limit         integer NOT NULL DEFAULT 0,
    tpm_limit         integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE UNIQUE INDEX projects_name_key ON projects (name);

CREATE TABLE tokens (
    id             uuid PRIMARY KEY,
    project_id     uuid NOT NULL REFERENCES projects (id),
    token_hash     text NOT NULL,
    prefix         text NOT NULL,
    label          text NOT NULL DEFAULT '',
    expires_at     timestamptz NOT NULL,
    max_requests   bigint,
    request_count  bigint NOT NULL DEFAULT 0,
    is_active      boolean NOT NULL DEFAULT true,
    deactivated_at timestamptz,
    rpm_limit      integer NOT NULL DEFAULT 0,
    tpm_limit      integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz
);
CREATE UNIQUE INDEX tokens_token_hash_key ON tokens (token_hash);
CREATE INDEX tokens_project_id_idx ON tokens (project_id);
CREATE INDEX tokens_expires_at_idx ON tokens (expires_at);

CREATE TABLE usage (
    id                uuid PRIMARY KEY,
    created_at        timestamptz NOT NULL,
    request_id        text NOT NULL,
    project_id        uuid,
    token_id          uuid,
    agent_token_id    uuid,
    user_id           text NOT NULL DEFAULT '',
    model             text NOT NULL DEFAULT '',
    endpoint          text NOT NULL,
    status            integer NOT NULL,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    total_tokens      integer NOT NULL DEFAULT 0,
    latency_ms        integer NOT NULL DEFAULT 0,
    ttfb_ms           integer NOT NULL DEFAULT 0,
    streamed          boolean NOT NULL DEFAULT false
);
CREATE INDEX usage_created_at_idx ON usage (created_at);
CREATE INDEX usage_project_id_created_at_idx ON usage (project_id, created_at);
CREATE INDEX usage_token_id_created_at_idx ON usage (token_id, created_at);

CREATE TABLE audit_events (
    id         uuid PRIMARY KEY,
    created_at timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    outcome    text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied', 'error')),
    project_id uuid,
    token_id   uuid,
    request_id text NOT NULL DEFAULT '',
    client_ip  text NOT NULL DEFAULT '',
    method     text NOT NULL DEFAULT '',
    path       text NOT NULL DEFAULT '',
    reason     text NOT NULL DEFAULT '',
    metadata   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id);
CREATE INDEX audit_events_action_idx ON audit_events (action);
