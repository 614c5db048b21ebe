package httpapi

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// withCache gives the server c, entries up to maxEntry bytes and metrics.
func withCache(c cache.Cache, maxEntry int64) func(*Deps) {
	return func(d *Deps) {
		d.Cache, d.CacheMaxEntryBytes, d.Metrics = c, maxEntry, telemetry.NewMetrics()
	}
}

func newCacheEnv(t *testing.T) *policyEnv {
	return newPolicyEnv(t, withCache(cache.NewMemory(cache.MemoryOptions{MaxBytes: 1 << 20}), 1<<20))
}

// usageRow returns the usage row of the request reqID.
func (e *policyEnv) usageRow(reqID string) store.Usage {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u := <-e.usage:
			if u.RequestID == reqID {
				return u
			}
		case <-deadline:
			e.t.Fatalf("no usage row for request %s", reqID)
		}
	}
}

// expect checks a response's status and X-Cache header and that the
// upstream was called calls times since the last check.
func (e *policyEnv) expect(w *httptest.ResponseRecorder, xcache string, calls int) {
	e.t.Helper()
	if w.Code != http.StatusOK {
		e.t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if got := w.Header().Get("X-Cache"); got != xcache {
		e.t.Errorf("X-Cache %q, want %q", got, xcache)
	}
	if got := len(e.upstreamCalls()); got != calls {
		e.t.Errorf("upstream called %d times, want %d", got, calls)
	}
}

func TestCacheHit(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t)
	tok := e.token(e.project(manage.CreateProjectInput{Provider: "openai"}))
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0}`

	miss := e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=60")
	e.expect(miss, "MISS", 1)
	if u := e.usageRow(miss.Header().Get("X-Request-Id")); u.Cached || u.TotalTokens != 330 {
		t.Errorf("miss usage row cached=%t total=%d, want false 330", u.Cached, u.TotalTokens)
	}

	hit := e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=60")
	e.expect(hit, "HIT", 0)
	if hit.Body.String() != string(chatAnswer) {
		t.Errorf("hit body %q, want the upstream's answer", hit.Body)
	}
	if ct := hit.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("hit Content-Type %q", ct)
	}
	if hit.Header().Get("Age") != "0" {
		t.Errorf("hit Age %q, want 0", hit.Header().Get("Age"))
	}
	u := e.usageRow(hit.Header().Get("X-Request-Id"))
	if !u.Cached || u.Status != http.StatusOK || u.Model != "gpt-4o-mini" || u.TotalTokens != 330 || u.PromptTokens != 120 {
		t.Errorf("hit usage row %+v, want cached, 200, gpt-4o-mini, 120+210=330 tokens", u)
	}

	// Key order and whitespace do not matter; the model does.
	e.expect(e.do("POST", "/v1/chat/completions", tok, "{ \"temperature\":0,\n \"messages\":[{\"content\":\"hi\",\"role\":\"user\"}], \"model\":\"gpt-4o-mini\" }",
		"Cache-Control", "max-age=60"), "HIT", 0)
	e.expect(e.do("POST", "/v1/chat/completions", tok, strings.Replace(body, "gpt-4o-mini", "gpt-4o", 1),
		"Cache-Control", "max-age=60"), "MISS", 1)
	// Another endpoint is another entry.
	e.expect(e.do("POST", "/v1/completions", tok, body, "Cache-Control", "max-age=60"), "MISS", 1)

	metrics := httptest.NewRecorder()
	e.deps.Metrics.Handler(nil).ServeHTTP(metrics, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`llm_cache_requests_total{result="hit"} 2`, `llm_cache_requests_total{result="miss"} 3`} {
		if !strings.Contains(metrics.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestCacheMaxAge: an entry older than the request's max-age is not
// served, and the answer replaces it.
func TestCacheMaxAge(t *testing.T) {
	t.Parallel()
	c := cache.NewMemory(cache.MemoryOptions{MaxBytes: 1 << 20})
	e := newPolicyEnv(t, withCache(c, 1<<20))
	p := e.project(manage.CreateProjectInput{Provider: "openai"})
	tok := e.token(p)
	body := chat("gpt-4o-mini")
	key, err := cache.Key(cache.Request{ProjectID: p.ID, Path: "/v1/chat/completions", Model: "gpt-4o-mini", Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	c.Set(t.Context(), key, cache.Entry{Status: http.StatusOK, Body: []byte(`{"old":true}`), Created: time.Now().Add(-2 * time.Minute)}, time.Hour)

	old := e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=600")
	e.expect(old, "HIT", 0)
	if age, _ := strconv.Atoi(old.Header().Get("Age")); old.Body.String() != `{"old":true}` || age < 120 {
		t.Errorf("body %s age %s, want the stored entry, 120s old", old.Body, old.Header().Get("Age"))
	}
	e.expect(e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=60"), "MISS", 1)
	fresh := e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=600")
	e.expect(fresh, "HIT", 0)
	if fresh.Body.String() != string(chatAnswer) {
		t.Errorf("after a miss, body %s, want the new answer", fresh.Body)
	}
}

func TestCacheProjectDefault(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t)
	tok := e.token(e.project(manage.CreateProjectInput{Provider: "openai", CacheTTLSeconds: 60}))
	body := chat("gpt-4o-mini")
	e.expect(e.do("POST", "/v1/chat/completions", tok, body), "MISS", 1)
	e.expect(e.do("POST", "/v1/chat/completions", tok, body), "HIT", 0)
	// no-store and no-cache skip it: neither read nor written.
	e.expect(e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "no-store"), "", 1)
	e.expect(e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "No-Cache"), "", 1)
	e.expect(e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=0"), "", 1)
}

// TestCacheNotStored: what must not be cached is forwarded every time.
func TestCacheNotStored(t *testing.T) {
	t.Parallel()
	sse := "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"
	tests := []struct {
		name   string
		path   string
		body   string
		answer func(w http.ResponseWriter, r *http.Request)
		xcache string // on each answer
	}{
		{"non-200", "/v1/chat/completions", chat("m"), func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"slow down"}}`))
		}, "MISS"},
		{"stream requested", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte(sse))
		}, ""},
		{"stream answered", "/v1/chat/completions", chat("m"), func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte(sse))
		}, "MISS"},
		{"over the entry bound", "/v1/chat/completions", chat("m"), func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"x":"` + strings.Repeat("a", 2000) + `"}`))
		}, "MISS"},
		{"over the entry bound, chunked", "/v1/chat/completions", chat("m"), func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for range 3 {
				_, _ = w.Write([]byte(strings.Repeat(" ", 800)))
				w.(http.Flusher).Flush()
			}
			_, _ = w.Write([]byte(`{}`))
		}, "MISS"},
		{"not JSON", "/v1/chat/completions", chat("m"), func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("hello"))
		}, "MISS"},
		{"not a JSON endpoint", "/v1/audio/speech", chat("m"), nil, ""},
		{"duplicate keys", "/v1/chat/completions", `{"model":"m","messages":[{"content":"a","content":"b"}]}`, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPolicyEnv(t, withCache(cache.NewMemory(cache.MemoryOptions{MaxBytes: 1 << 20}), 1500))
			e.mu.Lock()
			e.answer = tt.answer
			e.mu.Unlock()
			tok := e.token(e.project(manage.CreateProjectInput{Provider: "openai"}))
			for range 2 {
				w := e.do("POST", tt.path, tok, tt.body, "Cache-Control", "max-age=60")
				if got := w.Header().Get("X-Cache"); got != tt.xcache {
					t.Errorf("X-Cache %q, want %q", got, tt.xcache)
				}
				if got := len(e.upstreamCalls()); got != 1 {
					t.Errorf("upstream called %d times, want 1", got)
				}
			}
		})
	}
}

func TestCacheProjectsNeverShare(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t)
	a := e.token(e.project(manage.CreateProjectInput{Provider: "openai", Name: "a"}))
	b := e.token(e.project(manage.CreateProjectInput{Provider: "openai", Name: "b"}))
	body := chat("gpt-4o-mini")
	e.expect(e.do("POST", "/v1/chat/completions", a, body, "Cache-Control", "max-age=60"), "MISS", 1)
	e.expect(e.do("POST", "/v1/chat/completions", b, body, "Cache-Control", "max-age=60"), "MISS", 1)
	e.expect(e.do("POST", "/v1/chat/completions", a, body, "Cache-Control", "max-age=60"), "HIT", 0)
}

// TestCacheCountsRequestsNotTokens: a hit spends max_requests and
// requests/min like any request, but no tokens/min.
func TestCacheCountsRequestsNotTokens(t *testing.T) {
	t.Parallel()
	body := chat("gpt-4o-mini")
	// A quota or a rate limit of 2 requests: the miss and the hit spend
	// them, the third request is refused.
	for name, in := range map[string]manage.CreateTokenInput{
		"max_requests": {MaxRequests: new(int64(2))},
		"requests/min": {RPMLimit: 2},
	} {
		t.Run(name, func(t *testing.T) {
			e := newCacheEnv(t)
			in.ProjectID, in.DurationMinutes = e.project(manage.CreateProjectInput{Provider: "openai"}).ID, new(60)
			ct, err := e.mgr.CreateToken(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			e.expect(e.do("POST", "/v1/chat/completions", ct.Secret, body, "Cache-Control", "max-age=60"), "MISS", 1)
			e.expect(e.do("POST", "/v1/chat/completions", ct.Secret, body, "Cache-Control", "max-age=60"), "HIT", 0)
			if w := e.do("POST", "/v1/chat/completions", ct.Secret, body, "Cache-Control", "max-age=60"); w.Code != http.StatusTooManyRequests {
				t.Errorf("third request: status %d, want 429", w.Code)
			}
		})
	}
	t.Run("tokens/min", func(t *testing.T) {
		e := newCacheEnv(t)
		p := e.project(manage.CreateProjectInput{Provider: "openai"})
		// The answer is 330 tokens: one fits, a second would not.
		ct, err := e.mgr.CreateToken(t.Context(), manage.CreateTokenInput{ProjectID: p.ID, DurationMinutes: new(60), TPMLimit: 500})
		if err != nil {
			t.Fatal(err)
		}
		e.expect(e.do("POST", "/v1/chat/completions", ct.Secret, body, "Cache-Control", "max-age=60"), "MISS", 1)
		for range 5 {
			e.expect(e.do("POST", "/v1/chat/completions", ct.Secret, body, "Cache-Control", "max-age=60"), "HIT", 0)
		}
		// A request the cache cannot answer still meets the 330 spent.
		if w := e.do("POST", "/v1/chat/completions", ct.Secret, strings.Replace(body, "hi", "hello", 1)); w.Code != http.StatusOK {
			t.Fatalf("uncached request: status %d", w.Code)
		}
		if w := e.do("POST", "/v1/chat/completions", ct.Secret, body, "Cache-Control", "max-age=60"); w.Code != http.StatusTooManyRequests {
			t.Errorf("after 660 tokens: status %d, want 429", w.Code)
		}
	})
}

func TestCacheRedisShared(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.RedisClient(t)
	e := newPolicyEnv(t, withCache(cache.NewRedis(rdb, cache.RedisOptions{Prefix: prefix + "cache:", Timeout: time.Second}), 1<<20))
	tok := e.token(e.project(manage.CreateProjectInput{Provider: "openai"}))
	other, _ := testenv.RedisClient(t)
	replica := e.deps
	replica.Cache = cache.NewRedis(other, cache.RedisOptions{Prefix: prefix + "cache:", Timeout: time.Second})
	second := New(replica)

	body := chat("gpt-4o-mini")
	e.expect(e.do("POST", "/v1/chat/completions", tok, body, "Cache-Control", "max-age=60"), "MISS", 1)
	req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Cache-Control", "max-age=60")
	w := httptest.NewRecorder()
	second.ServeHTTP(w, req)
	e.expect(w, "HIT", 0)
	if w.Body.String() != string(chatAnswer) {
		t.Errorf("replica answered %s", w.Body)
	}
}

// TestCacheRedisDown: with Redis unreachable the cache is a plain pass-through.
func TestCacheRedisDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	c := cache.NewRedis(rdb, cache.RedisOptions{Timeout: 50 * time.Millisecond})
	e := newPolicyEnv(t, withCache(c, 1<<20))
	tok := e.token(e.project(manage.CreateProjectInput{Provider: "openai"}))
	for range 3 {
		w := e.do("POST", "/v1/chat/completions", tok, chat("gpt-4o-mini"), "Cache-Control", "max-age=60")
		e.expect(w, "MISS", 1)
		if w.Body.String() != string(chatAnswer) {
			t.Errorf("body %s", w.Body)
		}
	}
	if c.Errors() != 6 {
		t.Errorf("Redis errors %d, want 6 (a get and a set per request)", c.Errors())
	}
}

func TestCacheTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		values  []string
		project int
		ttl     time.Duration
		asked   bool
	}{
		{nil, 0, 0, false},
		{nil, 30, 30 * time.Second, true},
		{[]string{"max-age=60"}, 0, time.Minute, true},
		{[]string{"max-age=60"}, 30, time.Minute, true},
		{[]string{"Max-Age=5, private"}, 0, 5 * time.Second, true},
		{[]string{"private"}, 30, 30 * time.Second, true},
		{[]string{"private"}, 0, 0, true},
		{[]string{"max-age=60, no-store"}, 30, 0, true},
		{[]string{"max-age=60", "no-cache"}, 0, 0, true},
		{[]string{"max-age=60, max-age=70"}, 0, 0, true},
		{[]string{"max-age=-1"}, 30, 0, true},
		{[]string{"max-age=\"60\""}, 30, 0, true},
		{[]string{"max-age=99999999999999999999"}, 0, 0, true},
		{[]string{"max-age=999999999"}, 0, maxCacheTTL, true},
	}
	for _, tt := range tests {
		ttl, asked := cacheTTL(tt.values, tt.project)
		if ttl != tt.ttl || asked != tt.asked {
			t.Errorf("cacheTTL(%q, %d) = %v, %t; want %v, %t", tt.values, tt.project, ttl, asked, tt.ttl, tt.asked)
		}
	}
}
