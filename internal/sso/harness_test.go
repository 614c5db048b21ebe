package sso_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/httpapi"
	"github.com/llmproxy/llm-proxy/internal/invalidate"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/sso"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/testkit/idp"
	"github.com/llmproxy/llm-proxy/internal/testkit/syncbuf"
	"github.com/llmproxy/llm-proxy/internal/testkit/testclock"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

const (
	managementToken = "mgmt-token-for-sso-tests-0123456789"
	upstreamKey     = "sk-upstream-key-for-sso-tests"
	projectName     = "agents"
	clientID        = "llm-proxy"
	clientSecret    = "client-secret-for-tests"
	interval        = 5 * time.Second
	codeTTL         = 10 * time.Minute
	tokenTTL        = 24 * time.Hour
)

// usageSink passes every usage row written on to rows.
type usageSink struct {
	usage.Sink
	rows    chan store.Usage
	actions chan string // the actions of the audit events written
}

func (s usageSink) InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error {
	err := s.Sink.InsertAuditEvents(ctx, events)
	if err == nil {
		for _, ev := range events {
			select {
			case s.actions <- ev.Action:
			default:
			}
		}
	}
	return err
}

func (s usageSink) InsertUsage(ctx context.Context, rows []store.Usage) error {
	err := s.Sink.InsertUsage(ctx, rows)
	for _, r := range rows {
		select {
		case s.rows <- r:
		default:
		}
	}
	return err
}

// busTarget is the authenticator as the invalidation bus's target; it
// signals each flush, which the bus makes once its subscription is live,
// and each token invalidation it delivers.
type busTarget struct {
	*auth.Authenticator
	flushed     chan struct{}
	invalidated chan string
}

func (b busTarget) Flush() {
	b.Authenticator.Flush()
	select {
	case b.flushed <- struct{}{}:
	default:
	}
}

func (b busTarget) InvalidateToken(id string) {
	b.Authenticator.InvalidateToken(id)
	select {
	case b.invalidated <- id:
	default:
	}
}

// replica is one proxy: its own store handle, cache, bus and server.
type replica struct {
	// invalidated receives the token IDs the bus invalidates here (nil on
	// SQLite).
	invalidated chan string
	url         string
	st          store.Store
	auth        *auth.Authenticator
	mgr         *manage.Service
}

// env is a device-login deployment: the test provider, a fake upstream,
// one or more replicas on one database.
type env struct {
	t     *testing.T
	idp   *idp.Provider
	clock *testclock.Clock
	reps  []*replica
	usage chan store.Usage
	// audited receives the action of every audit event once it is in the
	// store.
	audited chan string
	logs    *syncbuf.Buffer
}

type envOptions struct {
	// postgresURL, when set, runs every replica on that PostgreSQL
	// database, invalidating through Redis; else one replica on SQLite.
	postgresURL string
	replicas    int
	domains     []string
	// noProject leaves the SSO project uncreated.
	noProject bool
	// callback is the replica whose /auth/callback is every replica's
	// redirect URL (SSO_REDIRECT_URL is one URL for the whole cluster).
	callback int
	// startLimit is SSO_START_LIMIT (0: no limit).
	startLimit int
	// limiter, when set, counts every replica's starts; else each replica
	// has a Redis limiter of its own on the shared Redis (PostgreSQL), or
	// the Service's default in-process one (SQLite).
	limiter ratelimit.Limiter
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.replicas == 0 {
		o.replicas = 1
	}
	e := &env{t: t, idp: idp.Start(t, clientID, clientSecret), clock: testclock.New(time.Now().UTC().Truncate(time.Second)),
		usage: make(chan store.Usage, 100), audited: make(chan string, 100), logs: &syncbuf.Buffer{}}
	up := httptest.NewServer(upstream.New(upstream.Options{Key: upstreamKey}))
	t.Cleanup(up.Close)
	cipher, err := secret.NewCipher(bytes.Repeat([]byte{7}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	servers := make([]*httptest.Server, o.replicas)
	for i := range servers {
		servers[i] = httptest.NewUnstartedServer(nil)
	}
	var sqliteStore store.Store
	if o.postgresURL == "" {
		sqliteStore = teststore.SQLite(t)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	runCtx, stop := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		closers []func() error // after the background work stopped
		rdb     *redis.Client
		prefix  string
	)
	t.Cleanup(func() {
		for _, s := range servers {
			s.Close()
		}
		stop()
		wg.Wait()
		for _, c := range closers {
			_ = c()
		}
	})
	if o.postgresURL != "" {
		var u string
		u, prefix = testenv.Redis(t)
		opt, err := redis.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		opt.ContextTimeoutEnabled = true
		rdb = redis.NewClient(opt)
		closers = append(closers, rdb.Close)
	}
	for _, hs := range servers {
		st := sqliteStore
		if st == nil {
			db, err := postgres.Open(t.Context(), postgres.Options{URL: o.postgresURL, PoolSize: 4})
			if err != nil {
				t.Fatalf("postgres.Open: %v", err)
			}
			closers = append(closers, db.Close)
			st = db
		}
		authn := auth.New(st, cipher, auth.Options{TTL: time.Hour, NegativeTTL: time.Millisecond, Now: e.clock.Now,
			Agents: st, AgentProject: projectName})
		rec := usage.New(usageSink{Sink: st, rows: e.usage, actions: e.audited}, usage.Options{FlushInterval: 10 * time.Millisecond})
		wg.Go(func() { _ = rec.Run(runCtx) })
		var (
			bus         *invalidate.Bus
			invalidated chan string
		)
		if o.postgresURL == "" {
			bus = invalidate.NewLocal(authn)
		} else {
			target := busTarget{Authenticator: authn, flushed: make(chan struct{}, 1), invalidated: make(chan string, 16)}
			invalidated = target.invalidated
			bus = invalidate.NewRedis(rdb, prefix+"invalidate", target, logger)
			wg.Go(func() { _ = bus.Run(runCtx) })
			select {
			case <-target.flushed:
			case <-time.After(10 * time.Second):
				t.Fatal("the invalidation bus did not subscribe")
			}
		}
		lim := o.limiter
		if lim == nil && rdb != nil {
			// A generous timeout: a loaded test machine must not turn a
			// slow answer into a 503.
			lim = ratelimit.NewRedis(rdb, ratelimit.RedisOptions{Prefix: prefix, Timeout: 2 * time.Second, Logger: logger})
		}
		svc := sso.New(sso.Config{
			Issuer: e.idp.URL, ClientID: clientID, ClientSecret: clientSecret,
			RedirectURL:    "http://" + servers[o.callback].Listener.Addr().String() + "/auth/callback",
			AllowedDomains: o.domains, Project: projectName, TokenTTL: tokenTTL, CodeTTL: codeTTL, Interval: interval,
			StartLimit: o.startLimit, Limiter: lim, Now: e.clock.Now, Logger: logger,
		}, st, bus, rec)
		mgr := manage.New(manage.Options{Store: st, Cipher: cipher, Invalidator: bus, Auditor: rec})
		fwd := proxy.New(proxy.Options{})
		t.Cleanup(fwd.Close)
		srv := httpapi.New(httpapi.Deps{
			Database: st, Auth: authn, Failures: auth.NewFailureLimiter(st, rec, auth.FailureOptions{}),
			Admission: admission.NewSplit(ratelimit.NewMemory(), quota.NewDB(st, rec), nil),
			Forwarder: fwd, Recorder: rec, Manager: mgr, SSO: svc, Logger: logger,
			ManagementToken: managementToken, MaxRequestBytes: 1 << 20,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		})
		hs.Config.Handler = srv
		hs.Start()
		e.reps = append(e.reps, &replica{url: hs.URL, st: st, auth: authn, mgr: mgr, invalidated: invalidated})
	}
	if !o.noProject {
		e.createProject(up.URL)
	}
	return e
}

func (e *env) createProject(baseURL string) {
	e.t.Helper()
	if _, err := e.reps[0].mgr.CreateProject(e.t.Context(), manage.CreateProjectInput{Name: projectName, BaseURL: baseURL, APIKey: upstreamKey}); err != nil {
		e.t.Fatalf("CreateProject: %v", err)
	}
}

// url is replica 0's root.
func (e *env) url() string { return e.reps[0].url }

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   string
	url    string // after redirects
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

func send(t *testing.T, c *http.Client, req *http.Request) response {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(body), url: res.Request.URL.String()}
}

// deviceCode asks base for a device code with form.
func deviceCode(t *testing.T, base string, form url.Values) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/auth/device/code", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return send(t, http.DefaultClient, req)
}

// codes is the answer of POST /auth/device/code.
type codes struct {
	DeviceCode, UserCode, VerificationURI, VerificationURIComplete string
	ExpiresIn, Interval                                            int
}

func startDevice(t *testing.T, base, label string) codes {
	t.Helper()
	r := deviceCode(t, base, url.Values{"client_id": {"cli"}, "client_name": {label}})
	if r.status != http.StatusOK {
		t.Fatalf("POST /auth/device/code: %d %s", r.status, r.body)
	}
	v := r.json(t)
	c := codes{DeviceCode: v["device_code"].(string), UserCode: v["user_code"].(string), VerificationURI: v["verification_uri"].(string),
		VerificationURIComplete: v["verification_uri_complete"].(string), ExpiresIn: int(v["expires_in"].(float64)), Interval: int(v["interval"].(float64))}
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(c.UserCode) {
		t.Fatalf("user_code %q is not XXXX-XXXX from the unambiguous alphabet", c.UserCode)
	}
	return c
}

// poll is one poll of the device code on base, sent as JSON.
func poll(t *testing.T, base, deviceCode string) response {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"grant_type": sso.GrantType, "device_code": deviceCode})
	req, _ := http.NewRequest(http.MethodPost, base+"/auth/device/token", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return send(t, http.DefaultClient, req)
}

// wantPollError polls and expects the OAuth error code.
func wantPollError(t *testing.T, base, deviceCode, code string) {
	t.Helper()
	r := poll(t, base, deviceCode)
	if r.status != http.StatusBadRequest || r.json(t)["error"] != code {
		t.Fatalf("poll: %d %s, want 400 %s", r.status, r.body, code)
	}
}

// redeem polls once more than interval after the last poll and returns the
// agent token.
func (e *env) redeem(t *testing.T, base, deviceCode string) string {
	t.Helper()
	e.clock.Advance(interval + time.Second)
	r := poll(t, base, deviceCode)
	if r.status != http.StatusOK {
		t.Fatalf("poll after approval: %d %s", r.status, r.body)
	}
	v := r.json(t)
	tok, _ := v["access_token"].(string)
	if !strings.HasPrefix(tok, "sk-agent-") || v["token_type"] != "Bearer" || v["expires_in"] != float64(tokenTTL/time.Second) {
		t.Fatalf("token answer %s", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("token answer Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
	}
	return tok
}

// browser is a person's browser: it keeps cookies, follows redirects and
// remembers the URLs it visited.
type browser struct {
	t       *testing.T
	c       *http.Client
	header  http.Header // added to every request (X-Forwarded-For)
	visited []string
}

func newBrowser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, header: http.Header{}}
	b.c = &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		b.visited = append(b.visited, req.URL.String())
		for k, v := range b.header {
			req.Header[k] = v
		}
		return nil
	}}
	return b
}

func (b *browser) do(method, target string, form url.Values) response {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	b.visited = append(b.visited, target)
	return send(b.t, b.c, req)
}

func (b *browser) get(target string) response { return b.do(http.MethodGet, target, nil) }

func (b *browser) post(target string, form url.Values) response {
	return b.do(http.MethodPost, target, form)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token of the page's forms.
func csrf(t *testing.T, page response) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page.body)
	if m == nil {
		t.Fatalf("no CSRF field on the page at %s (%d): %s", page.url, page.status, page.body)
	}
	return m[1]
}

// enterCode opens the verification page on base and submits userCode: the
// browser signs in at the provider and lands on the approval page.
func (b *browser) enterCode(base, userCode string) response {
	b.t.Helper()
	form := b.get(base + "/auth/device?user_code=" + url.QueryEscape(userCode))
	if form.status != http.StatusOK || !strings.Contains(form.body, `value="`+userCode+`"`) {
		b.t.Fatalf("code form: %d, prefilled with %s? %s", form.status, userCode, form.body)
	}
	return b.post(base+"/auth/device", url.Values{"csrf": {csrf(b.t, form)}, "user_code": {userCode}})
}

// approve submits decision ("approve" or "deny") on the approval page.
func (b *browser) decide(base string, page response, decision string) response {
	b.t.Helper()
	return b.post(base+"/auth/device/approve", url.Values{"csrf": {csrf(b.t, page)}, "decision": {decision}})
}

// chat sends a chat completion with secret to base.
func chat(t *testing.T, base, secret string) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	return send(t, http.DefaultClient, req)
}

// manageReq calls the management API of base.
func manageReq(t *testing.T, base, method, path string) response {
	t.Helper()
	req, _ := http.NewRequest(method, base+"/manage"+path, nil)
	req.Header.Set("Authorization", "Bearer "+managementToken)
	return send(t, http.DefaultClient, req)
}

// nextUsage waits for the next usage row.
func (e *env) nextUsage(t *testing.T) store.Usage {
	t.Helper()
	select {
	case u := <-e.usage:
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no usage row written")
		return store.Usage{}
	}
}

// issue runs the whole flow on base with a fresh browser and returns the
// agent token and the browser (signed in).
func (e *env) issue(t *testing.T, base, label string) (string, *browser) {
	t.Helper()
	c := startDevice(t, base, label)
	b := newBrowser(t)
	page := b.enterCode(base, c.UserCode)
	if page.status != http.StatusOK || !strings.Contains(page.body, "Approve this device?") {
		t.Fatalf("approval page: %d %s", page.status, page.body)
	}
	if done := b.decide(base, page, "approve"); done.status != http.StatusOK || !strings.Contains(done.body, "Device approved") {
		t.Fatalf("approve: %d %s", done.status, done.body)
	}
	return e.redeem(t, base, c.DeviceCode), b
}
