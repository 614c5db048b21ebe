// Package idp is an OpenID Connect provider for tests: discovery, JWKS,
// an authorization endpoint that signs in a configured person at once (no
// login form), and a token endpoint that checks the client, the redirect
// URI and the PKCE verifier and answers an RS256-signed ID token. Hooks
// forge what a hostile or broken provider would send, so tests can check
// that the relying party refuses it.
//
// The package is for tests; product binaries never import it.
package idp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// User is the person the authorization endpoint signs in.
type User struct {
	Subject       string
	Email         string
	EmailVerified bool
}

// Claims are the ID token's claims; Forge may change any of them.
type Claims struct {
	Issuer        string `json:"iss"`
	Subject       string `json:"sub"`
	Audience      string `json:"aud"`
	Expiry        int64  `json:"exp"`
	IssuedAt      int64  `json:"iat"`
	Nonce         string `json:"nonce,omitempty"`
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified"`
}

// Provider is a running test provider. Its setters are safe for concurrent
// use with the requests it serves.
type Provider struct {
	// URL is the issuer (http://127.0.0.1:port).
	URL          string
	ClientID     string
	ClientSecret string

	srv   *httptest.Server
	key   *rsa.PrivateKey
	other *rsa.PrivateKey // signs forged tokens

	mu     sync.Mutex
	user   User
	forge  func(*Claims)
	badSig bool
	page   bool
	now    func() time.Time
	codes  map[string]grant
	logins int
}

// grant is an issued authorization code.
type grant struct {
	clientID, redirect, nonce, challenge string
	user                                 User
}

// keys are the signing key and the unpublished one, made once per test
// process and shared by its providers (each has an issuer URL of its own):
// a 2048-bit key takes a good part of a second to make under the race
// detector.
var keys = sync.OnceValues(func() ([2]*rsa.PrivateKey, error) {
	var ks [2]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return ks, err
		}
		ks[i] = k
	}
	return ks, nil
})

// Start runs a provider for client clientID/secret until the test ends.
func Start(t testing.TB, clientID, secret string) *Provider {
	t.Helper()
	ks, err := keys()
	if err != nil {
		t.Fatal(err)
	}
	key, other := ks[0], ks[1]
	p := &Provider{ClientID: clientID, ClientSecret: secret, key: key, other: other, codes: map[string]grant{},
		now: time.Now, user: User{Subject: "user-1", Email: "ada@example.com", EmailVerified: true}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /keys", p.keys)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	p.URL = p.srv.URL
	t.Cleanup(p.srv.Close)
	return p
}

// SetUser sets the person the next sign-ins are for.
func (p *Provider) SetUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = u
}

// Forge makes the provider change the claims of the ID tokens it issues
// (nil: honest tokens).
func (p *Provider) Forge(f func(*Claims)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forge = f
}

// SignWithUnknownKey makes the provider sign ID tokens with a key its
// JWKS does not publish.
func (p *Provider) SignWithUnknownKey(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.badSig = on
}

// ShowPage makes the authorization endpoint answer with a page of its own
// whose link (id "continue") sends the browser back, as a real provider's
// sign-in page does, instead of redirecting at once; a browser then treats
// the way back as a navigation another site started.
func (p *Provider) ShowPage(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.page = on
}

// SetNow sets the provider's clock for issued-at and expiry.
func (p *Provider) SetNow(now func() time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.now = now
}

// Logins returns how many sign-ins the authorization endpoint has made.
func (p *Provider) Logins() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logins
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.URL,
		"authorization_endpoint":                p.URL + "/authorize",
		"token_endpoint":                        p.URL + "/token",
		"jwks_uri":                              p.URL + "/keys",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

func (p *Provider) keys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: string(jose.RS256), Use: "sig"},
	}})
}

// authorize signs the configured user in at once and sends the browser
// back with a code, after checking the request a real provider checks.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.ClientID || q.Get("response_type") != "code" || q.Get("redirect_uri") == "" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	p.mu.Lock()
	p.codes[code] = grant{clientID: q.Get("client_id"), redirect: q.Get("redirect_uri"), nonce: q.Get("nonce"),
		challenge: q.Get("code_challenge"), user: p.user}
	p.logins++
	page := p.page
	p.mu.Unlock()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	v := back.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	back.RawQuery = v.Encode()
	if page {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = signedInPage.Execute(w, back.String())
		return
	}
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// token redeems a code once: client credentials, redirect URI and the PKCE
// verifier must match.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.ClientID || secret != p.ClientSecret {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	p.mu.Lock()
	g, found := p.codes[r.PostForm.Get("code")]
	delete(p.codes, r.PostForm.Get("code"))
	forge, badSig, now := p.forge, p.badSig, p.now()
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !found || r.PostForm.Get("grant_type") != "authorization_code" || r.PostForm.Get("redirect_uri") != g.redirect ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}
	c := Claims{Issuer: p.URL, Subject: g.user.Subject, Audience: g.clientID, IssuedAt: now.Unix(),
		Expiry: now.Add(10 * time.Minute).Unix(), Nonce: g.nonce, Email: g.user.Email, EmailVerified: g.user.EmailVerified}
	if forge != nil {
		forge(&c)
	}
	key := p.key
	if badSig {
		key = p.other
	}
	idToken, err := sign(key, c)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": rand.Text(), "token_type": "Bearer", "expires_in": 600,
		"id_token": idToken})
}

var signedInPage = template.Must(template.New("").Parse(
	`<!doctype html><title>Test provider</title><p>Signed in. <a id="continue" href="{{.}}">Continue</a></p>`))

func sign(key *rsa.PrivateKey, c Claims) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	obj, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
