-- Usage at scale (issue #13). SQLite has no partitions: retention deletes
-- usage and audit rows in bounded batches. usage_rollup keeps hourly and
-- daily sums that /manage/usage reads instead of scanning raw rows; missing
-- ids are '' (not NULL) so they take part in the key. purpose: usage rows
-- gain that column in 000006; every row before it is 'client'. InsertUsage adds to it
-- in the transaction that inserts the raw rows, so the sums are exact.
CREATE TABLE usage_rollup (
    granularity       TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
    bucket            TEXT NOT NULL,
    project_id        TEXT NOT NULL,
    token_id          TEXT NOT NULL,
    agent_token_id    TEXT NOT NULL,
    model             TEXT NOT NULL,
    cached            INTEGER NOT NULL,
    purpose           TEXT NOT NULL DEFAULT 'client',
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    PRIMARY KEY (granularity, bucket, project_id, token_id, agent_token_id, model, cached, purpose)
);

INSERT INTO usage_rollup (granularity, bucket, project_id, token_id, agent_token_id, model, cached, requests,
        prompt_tokens, completion_tokens, total_tokens)
    SELECT 'hour', substr(created_at, 1, 13) || ':00:00.000000Z', COALESCE(project_id, ''), COALESCE(token_id, ''),
        COALESCE(agent_token_id, ''), model, cached, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
        SUM(total_tokens)
    FROM usage GROUP BY 1, 2, 3, 4, 5, 6, 7;
INSERT INTO usage_rollup (granularity, bucket, project_id, token_id, agent_token_id, model, cached, requests,
        prompt_tokens, completion_tokens, total_tokens)
    SELECT 'day', substr(created_at, 1, 10) || 'T00:00:00.000000Z', COALESCE(project_id, ''), COALESCE(token_id, ''),
        COALESCE(agent_token_id, ''), model, cached, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
        SUM(total_tokens)
    FROM usage GROUP BY 1, 2, 3, 4, 5, 6, 7;
