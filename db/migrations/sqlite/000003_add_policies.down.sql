ALTER TABLE usage DROP COLUMN cached;
ALTER TABLE tokens DROP COLUMN allowed_models;
ALTER TABLE projects DROP COLUMN cache_ttl_seconds;
ALTER TABLE projects DROP COLUMN allowed_models;
ALTER TABLE projects DROP COLUMN allowed_origins;
