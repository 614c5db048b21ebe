package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/cache"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/memory"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// memorySummary is what the fake upstream answers the summariser.
const memorySummary = `{"title":"Fix the login redirect","scope":"auth","goals":["users land on /home"],` +
	`"key_decisions":["keep cookies"],"touched_files":["auth/login.go"],"tests_run":["go test ./auth"],` +
	`"errors":[],"remaining_tasks":["update docs"],"completion_status":"partial"}`

// pastedSecret is a key a user pastes into a turn; it must never reach the
// database or the summariser.
const pastedSecret = "sk-proj-PASTEDsecret0123456789abcdef"

// memoryEnv is the gateway with memory on, an upstream that answers both
// the agent's chats and the summariser's JSON-mode prompt, and a
// summariser whose clock the test moves.
type memoryEnv struct {
	*policyEnv
	mem *memory.Memory
	sum *memory.Summariser
	now time.Time
}

func newMemoryEnv(t *testing.T, st store.Store) *memoryEnv {
	t.Helper()
	mem := memory.New(st, memory.Options{MaxInject: 3, MinScore: 0.3, MaxBytes: 64 << 10})
	e := &memoryEnv{mem: mem, now: time.Now()}
	e.policyEnv = newPolicyEnvOn(t, st, func(d *Deps) {
		d.Memory = mem
		d.ManagementToken = testManagementToken
	})
	e.setAnswerFunc(func(w http.ResponseWriter, body string) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(body, `"response_format"`) {
			ans, _ := json.Marshal(map[string]any{"model": "sum-model",
				"choices": []any{map[string]any{"message": map[string]any{"role": "assistant", "content": memorySummary}}},
				"usage":   map[string]int{"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80}})
			_, _ = w.Write(ans)
			return
		}
		_, _ = w.Write(chatAnswer)
	})
	fwd := proxy.New(proxy.Options{})
	t.Cleanup(fwd.Close)
	e.sum = memory.NewSummariser(st, testUpstreams{e.policyEnv}, fwd, e.deps.Recorder, memory.SummariserOptions{
		Worker: "test", IdleTimeout: 30 * time.Minute, Model: "sum-model", Now: func() time.Time { return e.now }})
	return e
}

// setAnswerFunc makes the upstream answer with answer, given the body.
func (e *policyEnv) setAnswerFunc(answer func(w http.ResponseWriter, body string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.answer = func(w http.ResponseWriter, _ *http.Request) {
		e.mu.Lock()
		body := e.upBodies[len(e.upBodies)-1]
		e.mu.Unlock()
		answer(w, body)
	}
}

type testUpstreams struct{ e *policyEnv }

func (u testUpstreams) Upstream(ctx context.Context, id string) (proxy.Upstream, error) {
	p, err := u.e.st.GetProject(ctx, id)
	if err != nil {
		return proxy.Upstream{}, err
	}
	return proxy.Upstream{Provider: p.Provider, BaseURL: p.BaseURL, APIKey: "sk-upstream-key"}, nil
}

// turn sends one chat request of a session.
func (e *memoryEnv) turn(secret, session, root, body string) *http.Response {
	e.t.Helper()
	h := []string{memory.HeaderSessionID, session}
	if root != "" {
		h = append(h, memory.HeaderProjectRoot, root)
	}
	w := e.do(http.MethodPost, "/v1/chat/completions", secret, body, h...)
	if w.Code != http.StatusOK {
		e.t.Fatalf("turn of %s: status %d: %s", session, w.Code, w.Body)
	}
	return w.Result()
}

func chatTurns(turns ...string) string {
	msgs := []map[string]string{{"role": "system", "content": "You are a coding agent."}}
	for i, t := range turns {
		msgs = append(msgs, map[string]string{"role": "user", "content": t})
		if i < len(turns)-1 {
			msgs = append(msgs, map[string]string{"role": "assistant", "content": "ok"})
		}
	}
	b, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": msgs})
	return string(b)
}

func injected(r *http.Response) string { return r.Header.Get(memory.HeaderInjected) }

func TestMemoryAcrossSessions(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) store.Store{
		"sqlite":   func(t *testing.T) store.Store { return teststore.SQLite(t) },
		"postgres": func(t *testing.T) store.Store { return teststore.Postgres(t) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newMemoryEnv(t, open(t))
			ctx := t.Context()
			pa, pb := e.project(manage.CreateProjectInput{Name: "team-a"}), e.project(manage.CreateProjectInput{Name: "team-b"})
			a, b := e.token(pa), e.token(pb)

			// Session 1: three turns; a secret pasted into the second.
			turns := []string{"fix the login redirect", "my key is " + pastedSecret + ", the redirect loops", "now add a test"}
			for i := range turns {
				r := e.turn(a, "s1", []string{"/w/app", "/w/app/", "/w//app/."}[i], chatTurns(turns[:i+1]...))
				if got := injected(r); got != "" {
					t.Fatalf("turn %d of the first session got X-Memory-Injected %q", i, got)
				}
			}
			e.upstreamCalls()
			e.mem.Flush(ctx)
			userA := memory.UserOf("", pa.ID)
			sess, err := e.st.GetMemorySession(ctx, userA, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(sess.Transcript, "PASTEDsecret") || !strings.Contains(sess.Transcript, "now add a test") ||
				!strings.Contains(sess.Transcript, "lorem ipsum") || sess.ProjectRoot != "/w/app" {
				t.Fatalf("stored transcript %s (root %q)", sess.Transcript, sess.ProjectRoot)
			}

			// Idle: summarised exactly once, without the secret.
			e.now = time.Now().Add(31 * time.Minute)
			if n, err := e.sum.RunOnce(ctx); err != nil || n != 1 {
				t.Fatalf("RunOnce = (%d, %v), want 1", n, err)
			}
			bodies := e.upstreamBodies()
			if len(bodies) != 1 || strings.Contains(bodies[0], "PASTEDsecret") || !strings.Contains(bodies[0], `"json_object"`) {
				t.Fatalf("summariser request: %q", bodies)
			}
			if n, _ := e.sum.RunOnce(ctx); n != 0 {
				t.Fatal("summarised twice")
			}
			sums, total, err := e.st.ListSessionSummaries(ctx, store.SummaryFilter{UserID: userA, Page: store.Page{Page: 1, PageSize: 10}})
			if err != nil || total != 1 {
				t.Fatalf("summaries = (%d, %v), want exactly one", total, err)
			}
			if s := sums[0]; s.Title != "Fix the login redirect" || s.RemainingTasks != "update docs" || s.SessionID != "s1" ||
				s.ProjectRoot != "/w/app" || strings.Contains(s.FullAnalysis, "PASTEDsecret") {
				t.Fatalf("summary %+v", s)
			}
			e.memoryUsageRow(pa.ID)

			// Session 2, same user and root: context on its first request only.
			r := e.turn(a, "s2", "/w/./app", chatTurns("what was left on the login redirect?"))
			if got := injected(r); got != "1" {
				t.Fatalf("X-Memory-Injected = %q, want 1", got)
			}
			var sent struct {
				Messages []memory.Message `json:"messages"`
			}
			bodies = e.upstreamBodies()
			if err := json.Unmarshal([]byte(bodies[0]), &sent); err != nil || len(sent.Messages) != 3 ||
				sent.Messages[0].Content != "You are a coding agent." || sent.Messages[1].Role != "system" ||
				!strings.HasPrefix(sent.Messages[1].Content, "[ProxyMem]") ||
				!strings.Contains(sent.Messages[1].Content, "update docs") || sent.Messages[2].Role != "user" {
				t.Fatalf("upstream got %s", bodies[0])
			}
			r = e.turn(a, "s2", "/w/app", chatTurns("what was left on the login redirect?", "go on"))
			if got := injected(r); got != "" || strings.Contains(e.upstreamBodies()[0], "[ProxyMem]") {
				t.Fatalf("second request of session 2 got memory again (%q)", got)
			}

			// Nothing crosses users or roots.
			for _, c := range []struct{ who, secret, session, root string }{
				{"another user, same root", b, "s3", "/w/app"},
				{"same user, another root", a, "s4", "/w/other"},
				{"same user, no root", a, "s5", ""},
				{"another user reusing the session ID", b, "s2", "/w/app"},
			} {
				r := e.turn(c.secret, c.session, c.root, chatTurns("what was left on the login redirect?"))
				if got := injected(r); got != "" || strings.Contains(e.upstreamBodies()[0], "ProxyMem") {
					t.Errorf("%s: got memory (%q)", c.who, got)
				}
			}

			// The management API shows and deletes it.
			w := e.do(http.MethodGet, "/manage/memory/projects?user_id="+userA, "", "", "Authorization", "Bearer "+testManagementToken)
			var dirs struct {
				Data []manage.ProjectDirView `json:"data"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &dirs); err != nil || w.Code != 200 || len(dirs.Data) != 2 ||
				dirs.Data[0].ProjectRoot != "/w/app" || !strings.HasPrefix(dirs.Data[0].ProjectID, "proj-") {
				t.Fatalf("GET /manage/memory/projects: %d %s", w.Code, w.Body)
			}
			w = e.do(http.MethodGet, "/manage/memory/summaries/"+sums[0].ID, "", "", "Authorization", "Bearer "+testManagementToken)
			var view manage.SummaryView
			if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil || w.Code != 200 || view.Title != sums[0].Title ||
				len(view.TouchedFiles) != 1 || view.FullAnalysis != memorySummary {
				t.Fatalf("GET summary: %d %s", w.Code, w.Body)
			}
			w = e.do(http.MethodDelete, "/manage/memory/sessions/s1?user_id="+userA, "", "", "Authorization", "Bearer "+testManagementToken)
			if w.Code != http.StatusNoContent {
				t.Fatalf("DELETE session: %d %s", w.Code, w.Body)
			}
			if _, total, _ := e.st.ListSessionSummaries(ctx, store.SummaryFilter{UserID: userA, Page: store.Page{Page: 1, PageSize: 10}}); total != 0 {
				t.Fatal("summaries left after deleting the session")
			}
			w = e.do(http.MethodGet, "/manage/memory/summaries/"+sums[0].ID, "", "", "Authorization", "Bearer "+testManagementToken)
			if w.Code != http.StatusNotFound {
				t.Fatalf("deleted summary: %d", w.Code)
			}
		})
	}
}

// memoryUsageRow waits for the summariser's usage row and checks it.
func (e *memoryEnv) memoryUsageRow(projectID string) {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u := <-e.usage:
			if u.Purpose != store.PurposeMemory {
				continue
			}
			if u.ProjectID != projectID || u.TotalTokens != 80 || u.Model != "sum-model" {
				e.t.Errorf("memory usage row %+v", u)
			}
			return
		case <-deadline:
			e.t.Fatal("no usage row with purpose memory")
		}
	}
}

// seedSummary stores a summary for the next session of user in root.
func (e *memoryEnv) seedSummary(user, root string) {
	e.t.Helper()
	ctx := e.t.Context()
	pid, err := e.st.ProjectDir(ctx, user, root, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	now := time.Now()
	if err := e.st.SaveTranscript(ctx, &store.MemorySession{UserID: user, SessionID: "old", ProjectID: pid,
		ProjectRoot: root, Transcript: "[]", LastActivity: now.Add(-time.Hour), CreatedAt: now.Add(-time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
	got, err := e.st.ClaimMemorySessions(ctx, store.MemoryClaim{Worker: "seed", IdleBefore: now, Now: now,
		LeaseUntil: now.Add(time.Minute), Limit: 1})
	if err != nil || len(got) != 1 {
		e.t.Fatalf("claim = (%d, %v)", len(got), err)
	}
	if err := e.st.CompleteMemorySession(ctx, "seed", got[0].LastActivity, &store.SessionSummary{
		ID: "5e5e5e5e-0000-4000-8000-000000000001", UserID: user, ProjectID: pid, ProjectRoot: root, SessionID: "old",
		Title: "Earlier work", RemainingTasks: "ship it", SummaryVersion: 1, CreatedAt: now}); err != nil {
		e.t.Fatal(err)
	}
}

func TestMemoryInjectsIntoAnthropicSystem(t *testing.T) {
	e := newMemoryEnv(t, teststore.SQLite(t))
	p := e.project(manage.CreateProjectInput{Name: "claude", Provider: store.ProviderAnthropic})
	tok := e.token(p)
	e.seedSummary(memory.UserOf("", p.ID), "/repo")
	e.setAnswer(http.StatusOK, `{"id":"m","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":1}}`)
	tests := []struct {
		name, system string
		check        func(sys json.RawMessage) bool
	}{
		{"string", `"be brief"`, func(sys json.RawMessage) bool {
			var s string
			return json.Unmarshal(sys, &s) == nil && strings.HasPrefix(s, "be brief\n\n[ProxyMem]") && strings.Contains(s, "ship it")
		}},
		{"blocks", `[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}]`, func(sys json.RawMessage) bool {
			var bl []map[string]any
			return json.Unmarshal(sys, &bl) == nil && len(bl) == 2 && bl[0]["cache_control"] != nil &&
				strings.HasPrefix(bl[1]["text"].(string), "[ProxyMem]")
		}},
		{"none", ``, func(sys json.RawMessage) bool {
			var s string
			return json.Unmarshal(sys, &s) == nil && strings.HasPrefix(s, "[ProxyMem]")
		}},
	}
	for _, tc := range tests {
		body := `{"model":"claude","max_tokens":64,"temperature":0.50,"messages":[{"role":"user","content":"ship the thing"}]}`
		if tc.system != "" {
			body = `{"model":"claude","max_tokens":64,"system":` + tc.system + `,"temperature":0.50,"messages":[{"role":"user","content":"ship the thing"}]}`
		}
		w := e.do(http.MethodPost, "/v1/messages", tok, body, memory.HeaderSessionID, "new-"+tc.name, memory.HeaderProjectRoot, "/repo")
		if w.Code != 200 || w.Header().Get(memory.HeaderInjected) != "1" {
			t.Fatalf("%s: status %d, X-Memory-Injected %q", tc.name, w.Code, w.Header().Get(memory.HeaderInjected))
		}
		sent := e.upstreamBodies()[0]
		var got struct {
			System json.RawMessage `json:"system"`
		}
		if err := json.Unmarshal([]byte(sent), &got); err != nil || !tc.check(got.System) {
			t.Errorf("%s: upstream got %s", tc.name, sent)
		}
		// The other fields keep their bytes.
		if !strings.Contains(sent, `"temperature":0.50,"messages":[{"role":"user","content":"ship the thing"}]}`) {
			t.Errorf("%s: other fields changed: %s", tc.name, sent)
		}
	}
}

func TestMemoryCapturesStreams(t *testing.T) {
	e := newMemoryEnv(t, teststore.SQLite(t))
	p := e.project(manage.CreateProjectInput{Name: "p"})
	tok := e.token(p)
	streams := map[string]string{
		"/v1/chat/completions": "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
			"data: {\"choices\":[{\"delta\":{\"content\":\"streamed \"}}]}\n\n" +
			"data: {\"choices\":[{\"delta\":{\"content\":\"answer\"}}]}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n" +
			"data: [DONE]\n\n",
		"/v1/messages": "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"streamed answer\"}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
	for path, stream := range streams {
		e.mu.Lock()
		e.answer = func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, stream)
		}
		e.mu.Unlock()
		body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":9,"messages":[{"role":"user","content":"stream please"}]}`
		w := e.do(http.MethodPost, path, tok, body, memory.HeaderSessionID, "stream"+path)
		if w.Code != 200 || w.Body.String() != stream {
			t.Fatalf("%s: %d %q", path, w.Code, w.Body)
		}
		e.mem.Flush(t.Context())
		sess, err := e.st.GetMemorySession(t.Context(), memory.UserOf("", p.ID), "stream"+path)
		if err != nil {
			t.Fatal(err)
		}
		want := `[{"role":"user","content":"stream please"},{"role":"assistant","content":"streamed answer"}]`
		if sess.Transcript != want {
			t.Errorf("%s: transcript %s, want %s", path, sess.Transcript, want)
		}
	}
}

func TestMemoryHostileInput(t *testing.T) {
	e := newMemoryEnv(t, teststore.SQLite(t))
	p := e.project(manage.CreateProjectInput{Name: "p"})
	tok := e.token(p)
	chatBody := chatTurns("hi")
	tests := []struct {
		name, path, body string
		header           []string
		status           int
		code             string
	}{
		{"huge session ID", "/v1/chat/completions", chatBody, []string{memory.HeaderSessionID, strings.Repeat("s", 10000)}, 400, "invalid_memory_header"},
		{"control characters in the root", "/v1/chat/completions", chatBody,
			[]string{memory.HeaderSessionID, "s", memory.HeaderProjectRoot, "/w/\x1b[2Japp"}, 400, "invalid_memory_header"},
		{"invalid UTF-8 session", "/v1/chat/completions", chatBody, []string{memory.HeaderSessionID, "s\xff"}, 400, "invalid_memory_header"},
		{"malformed JSON", "/v1/chat/completions", `{"messages":[`, []string{memory.HeaderSessionID, "s"}, 400, "invalid_json"},
		{"messages not an array", "/v1/chat/completions", `{"model":"m","messages":"x"}`, []string{memory.HeaderSessionID, "fresh"}, 200, ""},
		{"not a chat endpoint", "/v1/embeddings", `{"model":"m","input":"x"}`, []string{memory.HeaderSessionID, "s"}, 200, ""},
	}
	for _, tc := range tests {
		w := e.do(http.MethodPost, tc.path, tok, tc.body, tc.header...)
		if w.Code != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, w.Code, tc.status, w.Body)
			continue
		}
		if tc.code != "" {
			if got := decodeError(t, w); got.Code != tc.code {
				t.Errorf("%s: code %q, want %q", tc.name, got.Code, tc.code)
			}
		}
	}
	e.mem.Flush(t.Context())
	if s := e.mem.Stats(); s.WriteErrors != 0 {
		t.Errorf("stats %+v", s)
	}
}

// refuseFirst is an admission that refuses its first request.
type refuseFirst struct {
	Admission
	refused bool
}

func (a *refuseFirst) Admit(ctx context.Context, t *store.Token, l []ratelimit.Request) error {
	if !a.refused {
		a.refused = true
		return &admission.LimitedError{RetryAfter: time.Second}
	}
	return a.Admission.Admit(ctx, t, l)
}

// TestMemoryContextSurvivesARefusal: a session's first request refused by
// the limits does not use up its context; the retry gets it.
func TestMemoryContextSurvivesARefusal(t *testing.T) {
	st := teststore.SQLite(t)
	mem := memory.New(st, memory.Options{MaxInject: 3, MaxBytes: 64 << 10})
	e := newPolicyEnvOn(t, st, func(d *Deps) {
		d.Memory = mem
		d.Admission = &refuseFirst{Admission: d.Admission}
	})
	me := &memoryEnv{policyEnv: e, mem: mem}
	p := e.project(manage.CreateProjectInput{Name: "p"})
	tok := e.token(p)
	me.seedSummary(memory.UserOf("", p.ID), "/repo")
	w := e.do(http.MethodPost, "/v1/chat/completions", tok, chatTurns("ship it"), memory.HeaderSessionID, "s", memory.HeaderProjectRoot, "/repo")
	if w.Code != http.StatusTooManyRequests || w.Header().Get(memory.HeaderInjected) != "" {
		t.Fatalf("first try: %d, X-Memory-Injected %q", w.Code, w.Header().Get(memory.HeaderInjected))
	}
	w = e.do(http.MethodPost, "/v1/chat/completions", tok, chatTurns("ship it"), memory.HeaderSessionID, "s", memory.HeaderProjectRoot, "/repo")
	if w.Code != http.StatusOK || w.Header().Get(memory.HeaderInjected) != "1" {
		t.Fatalf("retry: %d, X-Memory-Injected %q", w.Code, w.Header().Get(memory.HeaderInjected))
	}
}

// TestMemoryAnswerNeverCached: an answer made with one user's memory is not
// stored in the response cache under the client's body.
func TestMemoryAnswerNeverCached(t *testing.T) {
	st := teststore.SQLite(t)
	mem := memory.New(st, memory.Options{MaxInject: 3, MaxBytes: 64 << 10})
	e := newPolicyEnvOn(t, st, withCache(cache.NewMemory(cache.MemoryOptions{MaxBytes: 1 << 20}), 1<<20), func(d *Deps) { d.Memory = mem })
	me := &memoryEnv{policyEnv: e, mem: mem}
	p := e.project(manage.CreateProjectInput{Name: "p"})
	tok := e.token(p)
	me.seedSummary(memory.UserOf("", p.ID), "/repo")
	body := chatTurns("ship it")
	w := e.do(http.MethodPost, "/v1/chat/completions", tok, body, "Cache-Control", "max-age=600",
		memory.HeaderSessionID, "s", memory.HeaderProjectRoot, "/repo")
	if w.Code != http.StatusOK || w.Header().Get(memory.HeaderInjected) != "1" {
		t.Fatalf("first: %d, X-Memory-Injected %q", w.Code, w.Header().Get(memory.HeaderInjected))
	}
	w = e.do(http.MethodPost, "/v1/chat/completions", tok, body, "Cache-Control", "max-age=600")
	if w.Code != http.StatusOK || w.Header().Get("X-Cache") == "HIT" {
		t.Fatalf("the same body without memory was answered from the cache (X-Cache %q)", w.Header().Get("X-Cache"))
	}
}
