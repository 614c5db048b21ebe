DROP INDEX agent_tokens_auth_expires_at_idx;
DROP TABLE sso_sessions;
ALTER TABLE pending_authorizations DROP COLUMN label;
