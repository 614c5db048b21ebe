-- Admin console sign-in by SSO (SPEC §6.8). return_to names where a
-- browser sign-in goes after the provider's callback: '' the device pages
-- (pending_id says which), 'console' the admin console. It is one of these
-- fixed values, set by the server when the sign-in starts; never a URL
-- taken from a request.
ALTER TABLE sso_sessions
    ADD COLUMN return_to text NOT NULL DEFAULT '';
