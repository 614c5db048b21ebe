CREATE INDEX usage_project_id_created_at_idx ON usage (project_id, created_at);
CREATE INDEX usage_token_id_created_at_idx ON usage (token_id, created_at);
