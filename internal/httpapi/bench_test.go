package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/memory"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

// chatAnswer is a ~1 KB chat completion with usage, as the benchmark's
// upstream returns it.
var chatAnswer = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("lorem ipsum ", 70) + `"},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":120,"completion_tokens":210,"total_tokens":330}}`)

// BenchmarkProxyPath measures the whole gateway path in process — auth,
// limits, quota, forwarding over loopback, usage extraction and recording —
// on SQLite with every feature on (SPEC §10's set-up (a)). Run with
// -benchmem -cpuprofile to see what a request costs.
func BenchmarkProxyPath(b *testing.B) { benchProxyPath(b, false) }

// BenchmarkProxyPathMemory is BenchmarkProxyPath with memory on and every
// request in one agent session (X-Session-ID): the cost of capture,
// background writes included (compare ns/op and the process CPU time).
func BenchmarkProxyPathMemory(b *testing.B) { benchProxyPath(b, true) }

func benchProxyPath(b *testing.B, withMemory bool) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(chatAnswer)
	}))
	defer up.Close()
	ctx := context.Background()
	st := teststore.SQLite(b)
	cipher, _ := secret.NewCipher(bytes.Repeat([]byte{1}, secret.KeySize))
	key, _ := cipher.Encrypt([]byte("sk-upstream"))
	now := time.Now().UTC()
	prj := &store.Project{ID: "0197a000-0000-7000-8000-000000000001", Name: "bench", Provider: "openai", BaseURL: up.URL + "/v1",
		APIKeyEncrypted: key, IsActive: true, RPMLimit: 1 << 30, TPMLimit: 1 << 30, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateProject(ctx, prj); err != nil {
		b.Fatal(err)
	}
	secretTok, prefix, hash, _ := auth.NewToken()
	maxReq := int64(1 << 40)
	if err := st.CreateToken(ctx, &store.Token{ID: "0197a000-0000-7000-8000-000000000002", ProjectID: prj.ID, Hash: hash, Prefix: prefix,
		ExpiresAt: now.Add(time.Hour), MaxRequests: &maxReq, IsActive: true, RPMLimit: 1 << 30, TPMLimit: 1 << 30, CreatedAt: now}); err != nil {
		b.Fatal(err)
	}
	rec := usage.New(st, usage.Options{})
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = rec.Run(runCtx) })
	defer func() { stop(); wg.Wait() }()
	fwd := proxy.New(proxy.Options{})
	defer fwd.Close()
	var mem *memory.Memory
	if withMemory {
		mem = memory.New(st, memory.Options{MaxInject: 3, MaxBytes: 64 << 10})
		wg.Go(func() { _ = mem.Run(runCtx) })
	}
	srv := New(Deps{
		Memory:   mem,
		Database: st, Auth: auth.New(st, cipher, auth.Options{TTL: time.Hour}), Failures: auth.NewFailureLimiter(st, rec, auth.FailureOptions{}),
		Admission: admission.NewSplit(ratelimit.NewMemory(), quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: rec}), nil),
		Forwarder: fwd, Recorder: rec, Metrics: telemetry.NewMetrics(), MaxRequestBytes: 10 << 20,
		// As cmd/proxy wires it without Redis; these requests do not ask
		// for it, so it must cost nothing.
		Cache: cache.NewMemory(cache.MemoryOptions{MaxBytes: 64 << 20}), CacheMaxEntryBytes: 1 << 20,
	})
	body := []byte(`{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"` + strings.Repeat("benchmark ", 40) + `"}]}`)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+secretTok)
			if withMemory {
				req.Header.Set("X-Session-ID", "bench-session")
				req.Header.Set("X-Project-Root", "/bench/app")
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body.String())
			}
		}
	})
}
