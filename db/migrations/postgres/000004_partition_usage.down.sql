-- Back to plain tables, keeping every row; the roll-up is derived data.
DROP TABLE usage_rollup;

ALTER TABLE usage RENAME TO usage_partitioned;
ALTER INDEX usage_pkey RENAME TO usage_partitioned_pkey;
ALTER INDEX usage_created_at_idx RENAME TO usage_partitioned_created_at_idx;
ALTER INDEX usage_project_id_created_at_idx RENAME TO usage_partitioned_project_id_created_at_idx;
ALTER INDEX usage_token_id_created_at_idx RENAME TO usage_partitioned_token_id_created_at_idx;

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
    streamed          boolean NOT NULL DEFAULT false,
    cached            boolean NOT NULL DEFAULT false
);
INSERT INTO usage SELECT id, created_at, request_id, project_id, token_id, agent_token_id, user_id, model, endpoint,
        status, prompt_tokens, completion_tokens, total_tokens, latency_ms, ttfb_ms, streamed, cached
    FROM usage_partitioned;
DROP TABLE usage_partitioned;
CREATE INDEX usage_created_at_idx ON usage (created_at);
CREATE INDEX usage_project_id_created_at_idx ON usage (project_id, created_at);
CREATE INDEX usage_token_id_created_at_idx ON usage (token_id, created_at);

ALTER TABLE audit_events RENAME TO audit_events_partitioned;
ALTER INDEX audit_events_pkey RENAME TO audit_events_partitioned_pkey;
ALTER INDEX audit_events_created_at_idx RENAME TO audit_events_partitioned_created_at_idx;
ALTER INDEX audit_events_project_id_idx RENAME TO audit_events_partitioned_project_id_idx;
ALTER INDEX audit_events_action_idx RENAME TO audit_events_partitioned_action_idx;
ALTER TABLE audit_events_partitioned RENAME CONSTRAINT audit_events_outcome_check TO audit_events_partitioned_outcome_check;

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
INSERT INTO audit_events SELECT id, created_at, actor, action, outcome, project_id, token_id, request_id, client_ip,
        method, path, reason, metadata
    FROM audit_events_partitioned;
DROP TABLE audit_events_partitioned;
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id);
CREATE INDEX audit_events_action_idx ON audit_events (action);
