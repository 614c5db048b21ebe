-- Policies for browser apps and cost control (SPEC §6.7). Lists are JSON
-- arrays of strings.
ALTER TABLE projects ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE projects ADD COLUMN allowed_models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE projects ADD COLUMN cache_ttl_seconds INTEGER NOT NULL DEFAULT 0;

ALTER TABLE tokens ADD COLUMN allowed_models TEXT NOT NULL DEFAULT '[]';

ALTER TABLE usage ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
