package sso

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
)

func newID() string { return uuid.NewString() }

// provider is the discovered OIDC provider.
type provider struct {
	verifier *oidc.IDTokenVerifier
	oauth    oauth2.Config
}

// errProvider wraps failures to reach or understand the identity provider.
var errProvider = errors.New("identity provider unavailable")

// provider returns the discovered provider, discovering it on first use (a
// failed discovery is retried by the next request, so the proxy starts
// while the provider is down). Requests wait for a discovery under way,
// which HTTPClient's timeout bounds.
func (s *Service) provider(ctx context.Context) (*provider, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idp != nil {
		return s.idp, nil
	}
	// The key set fetches keys later with the context given here: it must
	// outlive this request, and carry the client.
	octx := oidc.ClientContext(context.WithoutCancel(ctx), s.cfg.HTTPClient)
	p, err := oidc.NewProvider(octx, s.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery at SSO_ISSUER: %w", errProvider, err)
	}
	s.idp = &provider{
		verifier: p.Verifier(&oidc.Config{ClientID: s.cfg.ClientID, Now: s.now}),
		oauth: oauth2.Config{
			ClientID:     s.cfg.ClientID,
			ClientSecret: s.cfg.ClientSecret,
			RedirectURL:  s.cfg.RedirectURL,
			Endpoint:     p.Endpoint(),
			Scopes:       []string{oidc.ScopeOpenID, "email", "profile"},
		},
	}
	return s.idp, nil
}

// loginURL returns where the browser signs in for sess: the provider's
// authorization endpoint with state, nonce and the S256 PKCE challenge.
func (p *provider) loginURL(state, nonce, verifier string) string {
	return p.oauth.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
}

// identity is a verified person.
type identity struct {
	Provider string // the ID token's issuer
	Subject  string
	Email    string
}

// Reasons a sign-in is refused; their messages are shown to the person.
var (
	errBadState    = errors.New("the sign-in does not match this browser's session (state)")
	errBadToken    = errors.New("the identity provider's answer could not be verified")
	errUnverified  = errors.New("the identity provider did not confirm an email address for this account")
	errDomain      = errors.New("this email domain may not sign in here")
	errProviderNo  = errors.New("the identity provider refused the sign-in")
	errNoSession   = errors.New("no sign-in is in progress in this browser, or it expired; start again")
	errUsedSession = errors.New("this sign-in was already completed; start again")
	errNoConsole   = errors.New("the admin console does not accept sign-ins by SSO here")
)

// exchange redeems the authorization code with the PKCE verifier and
// verifies the ID token: signature against the provider's keys, issuer,
// audience and expiry (go-oidc), the nonce, a verified email and the
// allowed domains.
func (s *Service) exchange(ctx context.Context, p *provider, code, verifier, nonce string) (*identity, error) {
	octx := oidc.ClientContext(ctx, s.cfg.HTTPClient)
	tok, err := p.oauth.Exchange(octx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("%w: token exchange: %w", errBadToken, err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return nil, fmt.Errorf("%w: no id_token in the token response", errBadToken)
	}
	idt, err := p.verifier.Verify(octx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadToken, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 || nonce == "" {
		return nil, fmt.Errorf("%w: nonce mismatch", errBadToken)
	}
	var claims struct {
		Email         string `json:"email"`
		EmailVerified any    `json:"email_verified"`
	}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", errBadToken, err)
	}
	if claims.Email == "" || !verified(claims.EmailVerified) {
		return nil, errUnverified
	}
	if !s.domainAllowed(claims.Email) {
		return nil, errDomain
	}
	return &identity{Provider: idt.Issuer, Subject: idt.Subject, Email: claims.Email}, nil
}

// verified reads email_verified, which some providers send as a string.
func verified(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

// domainAllowed reports whether email's domain is in AllowedDomains (any
// domain when the list is empty).
func (s *Service) domainAllowed(email string) bool {
	if len(s.cfg.AllowedDomains) == 0 {
		return true
	}
	at := strings.LastIndexByte(email, '@')
	if at < 0 {
		return false
	}
	domain := strings.ToLower(email[at+1:])
	for _, d := range s.cfg.AllowedDomains {
		if domain == d {
			return true
		}
	}
	return false
}
