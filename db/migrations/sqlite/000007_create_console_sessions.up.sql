-- Admin console sessions (SPEC §6.8); times are TEXT in UTC as in 000001.
-- The session id lives only in the browser's cookie: the row keeps its SHA-256 (id_hash). token_mac is an
-- HMAC-SHA256 of the session id keyed with the management token it signed
-- in with, so rotating MANAGEMENT_TOKEN ends every session without storing
-- anything from which the token could be recovered. method is how the
-- session was opened ('token' now; 'sso' once console SSO exists) and
-- subject who opened it (the audit actor).
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    method       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    token_mac    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

CREATE INDEX console_sessions_expires_at_idx ON console_sessions (expires_at);
CREATE INDEX console_sessions_last_seen_at_idx ON console_sessions (last_seen_at);
