-- Admin console sessions (SPEC §6.8). The session id lives only in the
-- browser's cookie: the row keeps its SHA-256 (id_hash). token_mac is an
-- HMAC-SHA256 of the session id keyed with the management token it signed
-- in with, so rotating MANAGEMENT_TOKEN ends every session without storing
-- anything from which the token could be recovered. method is how the
-- session was opened ('token' now; 'sso' once console SSO exists) and
-- subject who opened it (the audit actor).
CREATE TABLE console_sessions (
    id_hash      text PRIMARY KEY,
    method       text NOT NULL,
    subject      text NOT NULL,
    token_mac    text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

CREATE INDEX console_sessions_expires_at_idx ON console_sessions (expires_at);
CREATE INDEX console_sessions_last_seen_at_idx ON console_sessions (last_seen_at);
