-- Usage at scale (issue #13): usage and audit_events become tables
-- partitioned by UTC day, so retention drops whole partitions instead of
-- deleting rows, and usage_rollup keeps hourly and daily sums that
-- /manage/usage reads instead of scanning raw rows.
--
-- A partitioned table's primary key must include the partition key, so the
-- keys become (id, created_at). Nothing references either table's id.
-- Each table gets a DEFAULT partition, so an insert never fails for lack of
-- a partition; the retention job (internal/retention) creates the daily
-- partitions ahead and moves any rows that reached the default partition
-- into theirs.
--
-- Existing rows are copied into daily partitions created for every day that
-- has rows, and for today and the next seven days. The whole file runs as
-- one transaction.

ALTER TABLE usage RENAME TO usage_unpartitioned;
ALTER INDEX usage_pkey RENAME TO usage_unpartitioned_pkey;
ALTER INDEX usage_created_at_idx RENAME TO usage_unpartitioned_created_at_idx;
ALTER INDEX usage_project_id_created_at_idx RENAME TO usage_unpartitioned_project_id_created_at_idx;
ALTER INDEX usage_token_id_created_at_idx RENAME TO usage_unpartitioned_token_id_created_at_idx;

CREATE TABLE usage (
    id                uuid NOT NULL,
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
) PARTITION BY RANGE (created_at);
CREATE TABLE usage_default PARTITION OF usage DEFAULT;

ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
ALTER INDEX audit_events_pkey RENAME TO audit_events_unpartitioned_pkey;
ALTER INDEX audit_events_created_at_idx RENAME TO audit_events_unpartitioned_created_at_idx;
ALTER INDEX audit_events_project_id_idx RENAME TO audit_events_unpartitioned_project_id_idx;
ALTER INDEX audit_events_action_idx RENAME TO audit_events_unpartitioned_action_idx;
ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_outcome_check TO audit_events_unpartitioned_outcome_check;

CREATE TABLE audit_events (
    id         uuid NOT NULL,
    created_at timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    outcome    text NOT NULL CONSTRAINT audit_events_outcome_check CHECK (outcome IN ('success', 'failure', 'denied', 'error')),
    project_id uuid,
    token_id   uuid,
    request_id text NOT NULL DEFAULT '',
    client_ip  text NOT NULL DEFAULT '',
    method     text NOT NULL DEFAULT '',
    path       text NOT NULL DEFAULT '',
    reason     text NOT NULL DEFAULT '',
    metadata   jsonb NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (created_at);
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- Partitions are named <table>_pYYYYMMDD and cover [day, day + 1) in UTC;
-- store/postgres reads the day back from the name.
DO $$
DECLARE
    tbl text;
    d   date;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['usage', 'audit_events'] LOOP
        FOR d IN EXECUTE format(
            'SELECT DISTINCT (created_at AT TIME ZONE ''UTC'')::date FROM %I
             UNION SELECT generate_series(0, 7) + (now() AT TIME ZONE ''UTC'')::date', tbl || '_unpartitioned')
        LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                tbl || '_p' || to_char(d, 'YYYYMMDD'), tbl,
                to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00', to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
        END LOOP;
    END LOOP;
END
$$;

INSERT INTO usage (id, created_at, request_id, project_id, token_id, agent_token_id, user_id, model, endpoint,
        status, prompt_tokens, completion_tokens, total_tokens, latency_ms, ttfb_ms, streamed, cached)
    SELECT id, created_at, request_id, project_id, token_id, agent_token_id, user_id, model, endpoint,
        status, prompt_tokens, completion_tokens, total_tokens, latency_ms, ttfb_ms, streamed, cached
    FROM usage_unpartitioned;
DROP TABLE usage_unpartitioned;

INSERT INTO audit_events (id, created_at, actor, action, outcome, project_id, token_id, request_id, client_ip,
        method, path, reason, metadata)
    SELECT id, created_at, actor, action, outcome, project_id, token_id, request_id, client_ip,
        method, path, reason, metadata
    FROM audit_events_unpartitioned;
DROP TABLE audit_events_unpartitioned;

-- Indexes after the copy: cheaper than maintaining them row by row.
ALTER TABLE usage ADD CONSTRAINT usage_pkey PRIMARY KEY (id, created_at);
CREATE INDEX usage_created_at_idx ON usage (created_at);
CREATE INDEX usage_project_id_created_at_idx ON usage (project_id, created_at);
CREATE INDEX usage_token_id_created_at_idx ON usage (token_id, created_at);

ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id, created_at);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id);
CREATE INDEX audit_events_action_idx ON audit_events (action);

-- usage_rollup: one row per granularity ('hour' or 'day'), UTC bucket start,
-- project, token, agent token, model, cached flag and purpose (usage rows
-- gain that column in 000006; every row before it is 'client'). Missing
-- ids are '' (not NULL) so they take part in the key. InsertUsage adds to it in the
-- transaction that inserts the raw rows, so the sums are exact.
CREATE TABLE usage_rollup (
    granularity       text NOT NULL CHECK (granularity IN ('hour', 'day')),
    bucket            timestamptz NOT NULL,
    project_id        text NOT NULL,
    token_id          text NOT NULL,
    agent_token_id    text NOT NULL,
    model             text NOT NULL,
    cached            boolean NOT NULL,
    purpose           text NOT NULL DEFAULT 'client',
    requests          bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    total_tokens      bigint NOT NULL,
    CONSTRAINT usage_rollup_pkey PRIMARY KEY (granularity, bucket, project_id, token_id, agent_token_id, model, cached,
        purpose)
);

INSERT INTO usage_rollup (granularity, bucket, project_id, token_id, agent_token_id, model, cached, requests,
        prompt_tokens, completion_tokens, total_tokens)
    SELECT g.granularity, date_trunc(g.granularity, u.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
        coalesce(u.project_id::text, ''), coalesce(u.token_id::text, ''), coalesce(u.agent_token_id::text, ''),
        u.model, u.cached, count(*), sum(u.prompt_tokens), sum(u.completion_tokens), sum(u.total_tokens)
    FROM usage u CROSS JOIN (VALUES ('hour'), ('day')) AS g (granularity)
    GROUP BY 1, 2, 3, 4, 5, 6, 7;
