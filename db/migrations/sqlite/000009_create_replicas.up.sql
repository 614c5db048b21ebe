-- Proxy processes seen by the cluster (SPEC §6.8, the console's cluster
-- page); times are TEXT in UTC as in 000001. Each process picks a random id
-- at start, upserts its row at start and every 10 s (last_seen_at), and
-- deletes it on a clean shutdown; rows of processes that stopped without
-- one (a crash, kill -9) are deleted by the retention sweeper a day after
-- they were last seen. version is the build's version string ('' when the
-- binary has none).
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);

CREATE INDEX replicas_last_seen_at_idx ON replicas (last_seen_at);
