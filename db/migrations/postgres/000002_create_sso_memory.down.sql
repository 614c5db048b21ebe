DROP TABLE memory_sessions;
DROP TABLE session_summaries;
DROP TABLE user_project_dirs;
DROP TABLE auth_rate_limits;
DROP TABLE pending_authorizations;
DROP TABLE agent_tokens;
