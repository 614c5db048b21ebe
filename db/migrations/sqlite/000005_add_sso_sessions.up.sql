-- SSO device login (SPEC §6.5). A device's label travels from the device
-- code request to its agent token; a browser session binds the sign-in at
-- the OIDC provider (state, nonce, PKCE verifier) to one browser and,
-- once signed in, carries the person's identity, so the start, the
-- callback and the approval may land on different replicas. The sign-in
-- belongs to the browser, not to one device code, so the oidc_* columns
-- of pending_authorizations stay unused (as does attempts_remaining:
-- wrong user codes are limited per client address in auth_rate_limits).
ALTER TABLE pending_authorizations
    ADD COLUMN label TEXT NOT NULL DEFAULT '';

CREATE TABLE sso_sessions (
    id            TEXT PRIMARY KEY,
    secret_hash   TEXT NOT NULL,
    oidc_state    TEXT NOT NULL DEFAULT '',
    oidc_nonce    TEXT NOT NULL DEFAULT '',
    pkce_verifier TEXT NOT NULL DEFAULT '',
    pending_id    TEXT,
    provider      TEXT NOT NULL DEFAULT '',
    subject       TEXT NOT NULL DEFAULT '',
    email         TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX sso_sessions_secret_hash_key ON sso_sessions (secret_hash);
CREATE INDEX sso_sessions_expires_at_idx ON sso_sessions (expires_at);
CREATE INDEX agent_tokens_auth_expires_at_idx ON agent_tokens (auth_expires_at);
