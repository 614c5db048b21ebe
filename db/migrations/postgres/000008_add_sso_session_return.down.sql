ALTER TABLE sso_sessions DROP COLUMN return_to;
