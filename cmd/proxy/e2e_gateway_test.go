package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	_ "modernc.org/sqlite"

	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

const mgmtToken = "mgmt-token-for-e2e-tests"

// gateway is a running proxy on SQLite with a fake upstream and a project.
type gateway struct {
	p   *proc
	up  *fakeUpstream
	dir string
}

// newGateway starts the proxy in process.
func newGateway(t *testing.T, env ...string) *gateway {
	t.Helper()
	g := &gateway{up: newFakeUpstream(t), dir: t.TempDir()}
	g.p = startProxy(t, g.dir, gatewayEnv(env)...)
	return g
}

// newBinaryGateway starts the -race proxy binary, for the tests that
// signal the process.
func newBinaryGateway(t *testing.T, env ...string) *gateway {
	t.Helper()
	g := &gateway{up: newFakeUpstream(t), dir: t.TempDir()}
	g.p = startBinary(t, g.dir, gatewayEnv(env)...)
	return g
}

// newReleaseGateway starts the proxy built without the race detector, for
// the tests that measure its time or memory under load.
func newReleaseGateway(t *testing.T, env ...string) *gateway {
	t.Helper()
	g := &gateway{up: newFakeUpstream(t), dir: t.TempDir()}
	g.p = startReleaseBinary(t, g.dir, gatewayEnv(env)...)
	return g
}

func gatewayEnv(env []string) []string {
	return append([]string{"MANAGEMENT_TOKEN=" + mgmtToken, "USAGE_FLUSH_INTERVAL=100ms"}, env...)
}

func (g *gateway) manage(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	return call(t, method, g.p.addr+"/manage"+path, mgmtToken, body, out)
}

// project creates a project and returns its ID.
func (g *gateway) project(t *testing.T, name, provider, baseURL string) string {
	t.Helper()
	var out struct {
		ID string `json:"id"`
	}
	body := map[string]any{"name": name, "provider": provider, "base_url": baseURL, "api_key": upstreamKey}
	if code := g.manage(t, "POST", "/projects", body, &out); code != http.StatusCreated || out.ID == "" {
		t.Fatalf("create project: status %d, %+v", code, out)
	}
	return out.ID
}

// token creates a token for the project and returns its ID and secret.
func (g *gateway) token(t *testing.T, projectID string, extra map[string]any) (string, string) {
	t.Helper()
	body := map[string]any{"project_id": projectID, "duration_minutes": 60}
	for k, v := range extra {
		body[k] = v
	}
	if _, ok := extra["expires_at"]; ok {
		delete(body, "duration_minutes")
	}
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if code := g.manage(t, "POST", "/tokens", body, &out); code != http.StatusCreated || !strings.HasPrefix(out.Token, "sk-") {
		t.Fatalf("create token: status %d, %+v", code, out)
	}
	return out.ID, out.Token
}

type usageRow struct {
	Status                    int
	Model, Endpoint           string
	Prompt, Completion, Total int
	Streamed                  bool
}

// usageRows reads the usage table straight from the proxy's SQLite file.
func (g *gateway) usageRows(t *testing.T) []usageRow {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(g.dir, "var", "db", "proxy.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT status, model, endpoint, prompt_tokens, completion_tokens, total_tokens, streamed FROM usage ORDER BY created_at`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []usageRow
	for rows.Next() {
		var r usageRow
		if err := rows.Scan(&r.Status, &r.Model, &r.Endpoint, &r.Prompt, &r.Completion, &r.Total, &r.Streamed); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// expireToken sets the token's expires_at a minute in the past, straight in
// the proxy's SQLite file (in the store's time layout).
func (g *gateway) expireToken(t *testing.T, id string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(g.dir, "var", "db", "proxy.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	past := time.Now().Add(-time.Minute).UTC().Format("2006-01-02T15:04:05.000000Z")
	if res, err := db.Exec(`UPDATE tokens SET expires_at = ? WHERE id = ?`, past, id); err != nil {
		t.Fatalf("expire token: %v", err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("expire token: %d rows updated, want 1", n)
	}
}

// waitUsage waits until n usage rows are written and returns them.
func (g *gateway) waitUsage(t *testing.T, n int) []usageRow {
	t.Helper()
	var rows []usageRow
	waitFor(t, 10*time.Second, "usage rows", func() bool {
		rows = g.usageRows(t)
		return len(rows) >= n
	})
	return rows
}

// chat sends a plain chat completion with the secret and returns the status
// and body.
func chat(t *testing.T, base, secret, model string) (int, []byte) {
	t.Helper()
	body := `{"model":"` + model + `","messages":[{"role":"user","content":"say hello please"}]}`
	req, err := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("X-Request-ID") == "" {
		t.Errorf("response without X-Request-ID (status %d)", resp.StatusCode)
	}
	return resp.StatusCode, b
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("not an OpenAI error body: %s", body)
	}
	return e.Error.Code
}

func TestOpenAISDKThroughTheProxy(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	pid := g.project(t, "openai-sdk", "openai", g.up.URL+"/v1")
	_, secret := g.token(t, pid, nil)
	client := openai.NewClient(option.WithBaseURL(g.p.addr+"/v1"), option.WithAPIKey(secret), option.WithMaxRetries(0))
	ctx := context.Background()

	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say hello please")},
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got := resp.Choices[0].Message.Content; got != "Hello from the fake upstream" {
		t.Errorf("chat content = %q", got)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say hello please")},
	})
	var text strings.Builder
	usageChunks := 0
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			usageChunks++
			continue
		}
		text.WriteString(ch.Choices[0].Delta.Content)
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if text.String() != "Hello from the fake upstream" || usageChunks != 0 {
		t.Errorf("stream text %q, usage-only chunks seen %d (want 0: the client did not ask)", text.String(), usageChunks)
	}

	stream = client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "gpt-4o-mini",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say hello please")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var streamedUsage int64
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) == 0 {
			streamedUsage = ch.Usage.TotalTokens
		}
	}
	if err := stream.Err(); err != nil || streamedUsage != 8 {
		t.Errorf("stream with include_usage: err %v, usage total %d, want 8", err, streamedUsage)
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: openai.EmbeddingModelTextEmbedding3Small,
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")},
	})
	if err != nil || len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 3 {
		t.Fatalf("embeddings: %v %+v", err, emb)
	}
	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "gpt-4o-mini" {
		t.Fatalf("models: %v %+v", err, models)
	}

	for i, h := range g.up.headers() {
		if h.Get("Authorization") != "Bearer "+upstreamKey {
			t.Errorf("upstream request %d: Authorization = %q", i, h.Get("Authorization"))
		}
		for k, vs := range h {
			for _, v := range vs {
				if strings.Contains(v, secret) {
					t.Errorf("upstream request %d saw the client token in %s", i, k)
				}
			}
		}
		if h.Get("X-Request-ID") == "" {
			t.Errorf("upstream request %d without X-Request-ID", i)
		}
	}

	rows := g.waitUsage(t, 5)
	want := []usageRow{
		{200, "gpt-4o-mini", "/v1/chat/completions", 3, 5, 8, false},
		{200, "gpt-4o-mini", "/v1/chat/completions", 3, 5, 8, true},
		{200, "gpt-4o-mini", "/v1/chat/completions", 3, 5, 8, true},
		{200, "text-embedding-3-small", "/v1/embeddings", 4, 0, 4, false},
		{200, "", "/v1/models", 0, 0, 0, false},
	}
	if len(rows) != len(want) {
		t.Fatalf("usage rows = %+v", rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("usage row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
}

func TestAnthropicSDKThroughTheProxy(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	pid := g.project(t, "anthropic-sdk", "anthropic", g.up.URL)
	_, secret := g.token(t, pid, nil)
	client := anthropic.NewClient(anthropicoption.WithBaseURL(g.p.addr), anthropicoption.WithAPIKey(secret), anthropicoption.WithMaxRetries(0))
	ctx := context.Background()
	params := anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))},
	}
	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "Hello from Claude" {
		t.Errorf("message content = %+v", msg.Content)
	}
	stream := client.Messages.NewStreaming(ctx, params)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Content) != 1 || acc.Content[0].Text != "Hello from Claude" {
		t.Errorf("streamed content = %+v", acc.Content)
	}
	for i, h := range g.up.headers() {
		if h.Get("x-api-key") != upstreamKey || h.Get("Authorization") != "" || h.Get("anthropic-version") == "" {
			t.Errorf("upstream request %d headers: x-api-key ok=%t authorization=%q version=%q",
				i, h.Get("x-api-key") == upstreamKey, h.Get("Authorization"), h.Get("anthropic-version"))
		}
	}
	rows := g.waitUsage(t, 2)
	for i, streamed := range []bool{false, true} {
		want := usageRow{200, "claude-sonnet-4-5", "/v1/messages", 10, 6, 16, streamed}
		if rows[i] != want {
			t.Errorf("usage row %d = %+v, want %+v", i, rows[i], want)
		}
	}
}

// TestMaxRequestsIsExactUnderConcurrency runs the quota on each of its
// counters: in process (SQLite), in the database (PostgreSQL without Redis)
// and in Redis, where it shares one script with the rate limits.
func TestMaxRequestsIsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  func(t *testing.T) []string
	}{
		{"sqlite", func(*testing.T) []string { return nil }},
		{"postgres", func(t *testing.T) []string {
			return []string{"DATABASE_URL=" + teststore.PostgresURL(t), "ENCRYPTION_KEY=" + testEncryptionKey}
		}},
		{"postgres+redis", func(t *testing.T) []string {
			redisURL, prefix := testenv.Redis(t)
			return []string{"DATABASE_URL=" + teststore.PostgresURL(t), "ENCRYPTION_KEY=" + testEncryptionKey,
				"REDIS_URL=" + redisURL, "REDIS_KEY_PREFIX=" + prefix, "REDIS_TIMEOUT=2s"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGateway(t, tc.env(t)...)
			pid := g.project(t, "quota", "openai", g.up.URL)
			_, secret := g.token(t, pid, map[string]any{"max_requests": 100, "rpm_limit": 100000, "tpm_limit": 10000000})
			var ok, limited, other atomic.Int64
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					for range 4 {
						switch code, _ := chat(t, g.p.addr, secret, "gpt-4o-mini"); code {
						case http.StatusOK:
							ok.Add(1)
						case http.StatusTooManyRequests:
							limited.Add(1)
						default:
							other.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if ok.Load() != 100 || limited.Load() != 156 || other.Load() != 0 {
				t.Errorf("ok=%d limited=%d other=%d, want exactly 100 ok and 156 limited", ok.Load(), limited.Load(), other.Load())
			}
			code, body := chat(t, g.p.addr, secret, "gpt-4o-mini")
			if code != http.StatusTooManyRequests || errorCode(t, body) != "insufficient_quota" {
				t.Errorf("after the quota: %d %s", code, body)
			}
			if tc.name == "postgres+redis" {
				m := scrape(t, g.p.addr)
				// Decisions share pipelines, so pool acquisitions are fewer
				// than requests; none may have failed.
				if m["redis_pool_connections_total"] < 1 || m["redis_pool_hits_total"]+m["redis_pool_misses_total"] < 1 || m["redis_errors_total"] != 0 {
					t.Errorf("Redis figures: connections %v, hits %v, misses %v, errors %v", m["redis_pool_connections_total"],
						m["redis_pool_hits_total"], m["redis_pool_misses_total"], m["redis_errors_total"])
				}
			}
		})
	}
}

func TestRevocationAndDeactivationTakeEffectOnTheNextRequest(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	pid := g.project(t, "revoke", "openai", g.up.URL)
	tid, secret := g.token(t, pid, nil)
	if code, body := chat(t, g.p.addr, secret, "m"); code != http.StatusOK {
		t.Fatalf("before revoke: %d %s", code, body)
	}
	if code := g.manage(t, "DELETE", "/tokens/"+tid, nil, nil); code != http.StatusNoContent {
		t.Fatalf("revoke: %d", code)
	}
	if code, body := chat(t, g.p.addr, secret, "m"); code != http.StatusUnauthorized || errorCode(t, body) != "token_revoked" {
		t.Errorf("after revoke: %d %s", code, body)
	}
	_, secret2 := g.token(t, pid, nil)
	if code, body := chat(t, g.p.addr, secret2, "m"); code != http.StatusOK {
		t.Fatalf("second token: %d %s", code, body)
	}
	if code := g.manage(t, "PATCH", "/projects/"+pid, map[string]any{"is_active": false}, nil); code != http.StatusOK {
		t.Fatalf("deactivate: %d", code)
	}
	if code, body := chat(t, g.p.addr, secret2, "m"); code != http.StatusForbidden || errorCode(t, body) != "project_inactive" {
		t.Errorf("after deactivation: %d %s", code, body)
	}
}

func TestAbortedStreamIsBilledForWhatWasProduced(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	pid := g.project(t, "abort", "openai", g.up.URL)
	_, secret := g.token(t, pid, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"model":"slow","stream":true,"messages":[{"role":"user","content":"count slowly"}]}`
	req, _ := http.NewRequestWithContext(ctx, "POST", g.p.addr+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	events := 0
	for events < 3 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			events++
		}
	}
	cancel()
	resp.Body.Close()
	rows := g.waitUsage(t, 1)
	r := rows[0]
	if r.Status != 499 || !r.Streamed || r.Completion < 3 || r.Completion >= 10 {
		t.Errorf("aborted stream usage = %+v, want status 499, streamed, 3..9 completion tokens", r)
	}
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	g := newGateway(t, "MAX_REQUEST_BYTES=2048", "UPSTREAM_TIMEOUT=1s")
	pid := g.project(t, "errors", "openai", g.up.URL)
	_, secret := g.token(t, pid, nil)
	post := func(secret, contentType string, body []byte) (int, []byte) {
		req, _ := http.NewRequest("POST", g.p.addr+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	before := len(g.up.headers())
	big := []byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 4096) + `"}]}`)
	if code, body := post(secret, "application/json", big); code != http.StatusRequestEntityTooLarge || errorCode(t, body) != "request_too_large" {
		t.Errorf("oversized body: %d %s", code, body)
	}
	if code, body := post(secret, "application/json", []byte(`{"model":`)); code != http.StatusBadRequest || errorCode(t, body) != "invalid_json" {
		t.Errorf("bad JSON: %d %s", code, body)
	}
	if n := len(g.up.headers()); n != before {
		t.Errorf("rejected requests reached the upstream (%d requests)", n-before)
	}
	if code, body := post("", "application/json", []byte(`{}`)); code != http.StatusUnauthorized {
		t.Errorf("no token: %d %s", code, body)
	}
	if code, body := post("sk-unknown", "application/json", []byte(`{}`)); code != http.StatusUnauthorized || errorCode(t, body) != "invalid_api_key" {
		t.Errorf("unknown token: %d %s", code, body)
	}
	// The API refuses a past expires_at, so the token expires in the
	// database before its first use; the expiry of a cached token is
	// auth's test, on its clock.
	expiredID, expired := g.token(t, pid, nil)
	g.expireToken(t, expiredID)
	if code, body := chat(t, g.p.addr, expired, "m"); code != http.StatusUnauthorized || errorCode(t, body) != "token_expired" {
		t.Errorf("expired token: %d %s", code, body)
	}
	start := time.Now()
	if code, body := chat(t, g.p.addr, secret, "hang"); code != http.StatusGatewayTimeout || errorCode(t, body) != "upstream_timeout" {
		t.Errorf("hanging upstream: %d %s", code, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("504 took %s with UPSTREAM_TIMEOUT=1s", d)
	}
	if code, body := chat(t, g.p.addr, secret, "fail"); code != http.StatusInternalServerError || !strings.Contains(string(body), "upstream broke") {
		t.Errorf("upstream 500 is relayed as is: %d %s", code, body)
	}
	down := g.project(t, "down", "openai", "http://127.0.0.1:1")
	_, downSecret := g.token(t, down, nil)
	if code, body := chat(t, g.p.addr, downSecret, "m"); code != http.StatusBadGateway || errorCode(t, body) != "upstream_unreachable" {
		t.Errorf("unreachable upstream: %d %s", code, body)
	}
}

func TestManagementAPIAuthAndAudit(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	if code := call(t, "GET", g.p.addr+"/manage/projects", "wrong-token", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("wrong management token: %d", code)
	}
	if code := call(t, "GET", g.p.addr+"/manage/projects", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("missing management token: %d", code)
	}
	pid := g.project(t, "audited", "openai", g.up.URL)
	req, _ := http.NewRequest("GET", g.p.addr+"/manage/projects/"+pid, nil)
	req.Header.Set("Authorization", "Bearer "+mgmtToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Contains(string(raw), upstreamKey) || !strings.Contains(string(raw), "api_key_masked") {
		t.Errorf("GET project: %d %s", resp.StatusCode, raw)
	}
	if code := g.manage(t, "DELETE", "/projects/"+pid, nil, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE project: %d, want 405", code)
	}
	var audit struct {
		Data []struct {
			Action  string `json:"action"`
			Outcome string `json:"outcome"`
		} `json:"data"`
	}
	waitFor(t, 5*time.Second, "audit events", func() bool {
		g.manage(t, "GET", "/audit?page_size=100", nil, &audit)
		return len(audit.Data) >= 5
	})
	seen := map[string]bool{}
	for _, e := range audit.Data {
		seen[e.Action+"/"+e.Outcome] = true
	}
	for _, want := range []string{"manage.auth/denied", "project.create/success", "project.get/success"} {
		if !seen[want] {
			t.Errorf("audit lacks %s: %+v", want, audit.Data)
		}
	}
}

func TestSIGTERMDuringABurstLosesNoUsage(t *testing.T) {
	t.Parallel()
	g := newBinaryGateway(t, "DRAIN_DELAY=300ms", "SHUTDOWN_GRACE=20s")
	pid := g.project(t, "burst", "openai", g.up.URL)
	_, secret := g.token(t, pid, nil)
	var ok atomic.Int64
	// running is closed once 20 requests have completed: the burst is
	// under way, and the slow streams (a second each) are mid-flight.
	running := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			model := "gpt-4o-mini"
			if i%4 == 0 {
				model = "slow"
			}
			body := `{"model":"` + model + `","stream":` + map[bool]string{true: "true", false: "false"}[model == "slow"] + `,"messages":[{"role":"user","content":"hi"}]}`
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", g.p.addr+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return // the listener closed
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte("upstream")) {
					if ok.Add(1) == 20 {
						close(running)
					}
				}
			}
		}()
	}
	select {
	case <-running:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d requests completed in 10s, want 20 before SIGTERM", ok.Load())
	}
	g.p.terminate(t)
	if code := g.p.exitCode(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d\n%s", code, g.p.output.String())
	}
	close(stop)
	wg.Wait()
	rows := g.usageRows(t)
	got := 0
	for _, r := range rows {
		if r.Status == http.StatusOK {
			got++
		}
	}
	if ok.Load() == 0 || int64(got) != ok.Load() {
		t.Errorf("clients got %d complete 200s, usage table holds %d rows with status 200", ok.Load(), got)
	}
}

// The official SDKs work unchanged with an origin list, a model allow-list
// and the response cache all on (the SDKs send no Origin): a repeated chat
// is answered from the cache, a model outside the list is a 403 the SDK
// reports with its code.
func TestOpenAISDKWithPoliciesOn(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	var prj struct {
		ID string `json:"id"`
	}
	body := map[string]any{"name": "policies", "provider": "openai", "base_url": g.up.URL + "/v1", "api_key": upstreamKey,
		"allowed_origins": []string{"https://app.example.com"}, "allowed_models": []string{"gpt-4o-*"}, "cache_ttl_seconds": 60}
	if code := g.manage(t, "POST", "/projects", body, &prj); code != http.StatusCreated {
		t.Fatalf("create project: %d", code)
	}
	_, secret := g.token(t, prj.ID, nil)
	client := openai.NewClient(option.WithBaseURL(g.p.addr+"/v1"), option.WithAPIKey(secret), option.WithMaxRetries(0))
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say hello please")},
	}
	for i := range 2 {
		resp, err := client.Chat.Completions.New(ctx, params)
		if err != nil || resp.Choices[0].Message.Content != "Hello from the fake upstream" {
			t.Fatalf("chat %d: %v %+v", i, err, resp)
		}
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if n := len(g.up.seenPaths()); n != 2 {
		t.Errorf("upstream got %d requests, want 2 (the repeated chat answered from the cache)", n)
	}
	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "o3",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || apiErr.Code != "model_not_allowed" {
		t.Errorf("disallowed model: %v, want a 403 model_not_allowed", err)
	}
}
