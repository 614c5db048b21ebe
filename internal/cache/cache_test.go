package cache_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// implementations returns a fresh cache of each kind; the Redis one needs
// TEST_REDIS_URL.
func implementations(t *testing.T) map[string]func(t *testing.T) cache.Cache {
	return map[string]func(t *testing.T) cache.Cache{
		"memory": func(t *testing.T) cache.Cache { return cache.NewMemory(cache.MemoryOptions{MaxBytes: 1 << 20}) },
		"redis": func(t *testing.T) cache.Cache {
			rdb, prefix := testenv.RedisClient(t)
			return cache.NewRedis(rdb, cache.RedisOptions{Prefix: prefix + "cache:", Timeout: time.Second})
		},
	}
}

func entry(body string) cache.Entry {
	return cache.Entry{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body),
		Model: "gpt-4o-mini", PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, Created: time.UnixMilli(1_700_000_000_123)}
}

// TestCache is the behaviour both implementations share.
func TestCache(t *testing.T) {
	t.Parallel()
	for name, newCache := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c := newCache(t)
			if _, ok := c.Get(ctx, "k1"); ok {
				t.Fatal("Get on an empty cache hit")
			}
			want := entry(`{"answer":1}`)
			c.Set(ctx, "k1", want, time.Minute)
			got, ok := c.Get(ctx, "k1")
			if !ok {
				t.Fatal("Get after Set missed")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
			if _, ok := c.Get(ctx, "k2"); ok {
				t.Error("Get of another key hit")
			}

			c.Set(ctx, "k1", entry(`{"answer":2}`), time.Minute)
			if got, _ := c.Get(ctx, "k1"); string(got.Body) != `{"answer":2}` {
				t.Errorf("after a second Set, body %s, want the new one", got.Body)
			}

			c.Set(ctx, "zero", want, 0)
			if _, ok := c.Get(ctx, "zero"); ok {
				t.Error("an entry set with ttl 0 was stored")
			}
		})
	}
}

func TestMemoryExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	c := cache.NewMemory(cache.MemoryOptions{MaxBytes: 1 << 20, Now: func() time.Time { return now }})
	c.Set(ctx, "k", entry("{}"), 10*time.Second)
	now = now.Add(10*time.Second - time.Millisecond)
	if _, ok := c.Get(ctx, "k"); !ok {
		t.Fatal("entry gone before its TTL")
	}
	now = now.Add(time.Millisecond)
	if _, ok := c.Get(ctx, "k"); ok {
		t.Fatal("entry served at its TTL")
	}
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("after expiry, stats %+v, want empty", s)
	}
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	body := strings.Repeat("x", 1000)
	c := cache.NewMemory(cache.MemoryOptions{MaxBytes: 3600}) // three entries (1168 bytes each) fit, not four
	for _, k := range []string{"a", "b", "c"} {
		c.Set(ctx, k, entry(body), time.Hour)
	}
	if _, ok := c.Get(ctx, "a"); !ok { // a is now the most recently used
		t.Fatal("a missing before the cache was full")
	}
	c.Set(ctx, "d", entry(body), time.Hour)
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok := c.Get(ctx, k); ok != want {
			t.Errorf("Get(%s) hit=%t, want %t", k, ok, want)
		}
	}
	if s := c.Stats(); s.Entries != 3 || s.Bytes > 3600 {
		t.Errorf("stats %+v, want 3 entries within 3600 bytes", s)
	}

	c.Set(ctx, "huge", entry(strings.Repeat("x", 4000)), time.Hour)
	if _, ok := c.Get(ctx, "huge"); ok {
		t.Error("an entry larger than MaxBytes was stored")
	}
	if s := c.Stats(); s.Entries != 3 {
		t.Errorf("an oversized entry evicted others: stats %+v", s)
	}
}

func TestMemoryConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := cache.NewMemory(cache.MemoryOptions{MaxBytes: 4096})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				k := string(rune('a' + (i+j)%16))
				c.Set(ctx, k, entry(strings.Repeat("y", 300)), time.Hour)
				c.Get(ctx, k)
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.Bytes > 4096 {
		t.Errorf("stats %+v exceed MaxBytes", s)
	}
}

// TestRedisShared: two replicas on one Redis answer each other's entries,
// and the key expires in Redis with the TTL.
func TestRedisShared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.RedisClient(t)
	a := cache.NewRedis(rdb, cache.RedisOptions{Prefix: prefix + "cache:"})
	other, _ := testenv.RedisClient(t)
	b := cache.NewRedis(other, cache.RedisOptions{Prefix: prefix + "cache:"})
	a.Set(ctx, "k", entry("{}"), 30*time.Second)
	if _, ok := b.Get(ctx, "k"); !ok {
		t.Fatal("replica b missed replica a's entry")
	}
	ttl, err := rdb.PTTL(ctx, prefix+"cache:k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 30*time.Second {
		t.Errorf("key TTL %v, want within (0, 30s]", ttl)
	}
	c := cache.NewRedis(rdb, cache.RedisOptions{Prefix: prefix + "elsewhere:"})
	if _, ok := c.Get(ctx, "k"); ok {
		t.Error("a cache with another prefix hit")
	}
}

func TestRedisCorruptEntryIsMiss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.RedisClient(t)
	c := cache.NewRedis(rdb, cache.RedisOptions{Prefix: prefix})
	for _, raw := range []string{"", "garbage", "llmc1", "llmc1\x05{}", "llmc1\x02{x"} {
		if err := rdb.Set(ctx, prefix+"k", raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Get(ctx, "k"); ok {
			t.Errorf("entry %q decoded", raw)
		}
	}
	if c.Errors() != 5 {
		t.Errorf("Errors() = %d, want 5", c.Errors())
	}
}

// TestRedisDown: with Redis unreachable, Get misses and Set is dropped,
// each bounded by the timeout, and the failures are counted; the breaker
// then stops the calls.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	brk := breaker.New(breaker.Options{Failures: 2, Cooldown: time.Hour})
	c := cache.NewRedis(rdb, cache.RedisOptions{Timeout: 50 * time.Millisecond, Breaker: brk})
	ctx := context.Background()
	c.Set(ctx, "k", entry("{}"), time.Minute)
	if _, ok := c.Get(ctx, "k"); ok {
		t.Fatal("Get hit with Redis down")
	}
	if c.Errors() != 2 {
		t.Errorf("Errors() = %d, want 2", c.Errors())
	}
	if !brk.Open() {
		t.Error("breaker closed after two failed calls")
	}
	if err := brk.Do(ctx, func(context.Context) error { return nil }); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("breaker Do = %v, want ErrOpen", err)
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	base := cache.Request{ProjectID: "p1", Path: "/v1/chat/completions", Model: "m",
		Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}`)}
	key := func(t *testing.T, r cache.Request) string {
		t.Helper()
		k, err := cache.Key(r)
		if err != nil {
			t.Fatalf("Key: %v", err)
		}
		return k
	}
	want := key(t, base)
	same := map[string]func(r *cache.Request){
		"keys reordered": func(r *cache.Request) {
			r.Body = []byte(`{"temperature":0.5,"messages":[{"content":"hi","role":"user"}],"model":"m"}`)
		},
		"whitespace": func(r *cache.Request) {
			r.Body = []byte("{ \"model\" : \"m\",\n\t\"messages\" : [ { \"role\":\"user\", \"content\":\"hi\" } ], \"temperature\":0.5 }\n")
		},
		"escaped key": func(r *cache.Request) {
			r.Body = []byte(`{"model":"m","messages":[{"role":"user","content":"h\u0069"}],"temperature":0.5}`)
		},
		"unrelated header": func(r *cache.Request) { r.Header = http.Header{"User-Agent": {"x"}} },
	}
	for name, edit := range same {
		t.Run("same/"+name, func(t *testing.T) {
			r := base
			edit(&r)
			if got := key(t, r); got != want {
				t.Error("key differs")
			}
		})
	}
	differ := map[string]func(r *cache.Request){
		"project": func(r *cache.Request) { r.ProjectID = "p2" },
		"path":    func(r *cache.Request) { r.Path = "/v1/completions" },
		"query":   func(r *cache.Request) { r.RawQuery = "api-version=1" },
		"model":   func(r *cache.Request) { r.Model = "n" },
		"number text": func(r *cache.Request) {
			r.Body = []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.50}`)
		},
		"array order": func(r *cache.Request) {
			r.Body = []byte(`{"model":"m","messages":[{"role":"user","content":"hi"},{}],"temperature":0.5}`)
		},
		"beta header":    func(r *cache.Request) { r.Header = http.Header{"Anthropic-Beta": {"x"}} },
		"field boundary": func(r *cache.Request) { r.ProjectID, r.Path = "p1/v1/chat", "/completions" },
	}
	for name, edit := range differ {
		t.Run("differ/"+name, func(t *testing.T) {
			r := base
			edit(&r)
			if got := key(t, r); got == want {
				t.Error("key is the same")
			}
		})
	}
	for _, body := range []string{"", "not json", `{"a":1}{"b":2}`, `{"a":1,"a":2}`, `{"x":{"a":1,"b":2,"a":3}}`, "{\"a\":\"\xff\"}", `{"a":`} {
		if _, err := cache.Key(cache.Request{Body: []byte(body)}); !errors.Is(err, cache.ErrNotCanonical) {
			t.Errorf("Key(%q) error %v, want ErrNotCanonical", body, err)
		}
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	got, err := cache.Canonical([]byte(` {"b":[1, 2.50, {"z":null,"a":true}],"a":"<\u00e9>"} `))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"\u003cé\u003e","b":[1,2.50,{"a":true,"z":null}]}`; string(got) != want {
		t.Errorf("Canonical = %s, want %s", got, want)
	}
}
