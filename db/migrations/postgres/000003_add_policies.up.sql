-- Policies for browser apps and cost control (SPEC §6.7). Lists are JSON
-- arrays of strings, as on SQLite, so both dialects read them alike.
ALTER TABLE projects
    ADD COLUMN allowed_origins   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN allowed_models    jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN cache_ttl_seconds integer NOT NULL DEFAULT 0;

ALTER TABLE tokens
    ADD COLUMN allowed_models jsonb NOT NULL DEFAULT '[]';

ALTER TABLE usage
    ADD COLUMN cached boolean NOT NULL DEFAULT false;
