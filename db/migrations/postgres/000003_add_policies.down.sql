ALTER TABLE usage DROP COLUMN cached;
ALTER TABLE tokens DROP COLUMN allowed_models;
ALTER TABLE projects
    DROP COLUMN cache_ttl_seconds,
    DROP COLUMN allowed_models,
    DROP COLUMN allowed_origins;
