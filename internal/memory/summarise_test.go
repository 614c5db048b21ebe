package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/memory"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// summaryAnswer is a valid summariser answer (the content of the chat
// completion).
const summaryAnswer = `{"title":"Fix login","scope":"auth","goals":["log in with SSO"],"key_decisions":["use PKCE"],` +
	`"touched_files":["auth.go"],"tests_run":["go test ./auth"],"errors":[],"remaining_tasks":["docs"],"completion_status":"partial"}`

// fakeLLM is an OpenAI-compatible upstream for the summariser: it answers
// every chat completion with content, and records what it was asked.
type fakeLLM struct {
	srv *httptest.Server

	mu      sync.Mutex
	content string
	calls   map[string]int // by the session's marker found in the transcript
	bodies  []string
}

func newFakeLLM(t *testing.T, content string) *fakeLLM {
	f := &fakeLLM{content: content, calls: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(body))
		if i := strings.Index(string(body), "marker-"); i >= 0 {
			f.calls[string(body[i:i+10])]++
		}
		content := f.content
		f.mu.Unlock()
		ans, _ := json.Marshal(map[string]any{"id": "c", "model": "sum-model",
			"choices": []any{map[string]any{"message": map[string]any{"role": "assistant", "content": content}}},
			"usage":   map[string]int{"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(ans)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// count returns how often the session with marker was summarised.
func (f *fakeLLM) count(marker string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[marker]
}

// body returns the i-th request body.
func (f *fakeLLM) body(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[i]
}

type staticUpstreams struct{ up proxy.Upstream }

func (s staticUpstreams) Upstream(context.Context, string) (proxy.Upstream, error) { return s.up, nil }

type usageRows struct {
	mu   sync.Mutex
	rows []store.Usage
}

func (u *usageRows) Usage(r store.Usage) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rows = append(u.rows, r)
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var t0 = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

func saveSession(t *testing.T, st store.Store, user, id string, at time.Time) {
	t.Helper()
	err := st.SaveTranscript(t.Context(), &store.MemorySession{UserID: user, SessionID: id, ProjectID: "proj-1",
		ProjectRoot: "/w/app", UpstreamProjectID: "p", Model: "gpt-4o",
		Transcript: `[{"role":"user","content":"work on ` + id + `"}]`, LastActivity: at, CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
}

func newSummariser(t *testing.T, st store.Store, llm *fakeLLM, clk *clock, rec *usageRows, worker string, attempts int) *memory.Summariser {
	fwd := proxy.New(proxy.Options{UpstreamTimeout: 10 * time.Second})
	t.Cleanup(fwd.Close)
	return memory.NewSummariser(st, staticUpstreams{proxy.Upstream{Provider: "openai", BaseURL: llm.srv.URL + "/v1", APIKey: "k"}},
		fwd, rec, memory.SummariserOptions{Worker: worker, IdleTimeout: 30 * time.Minute, Model: "sum-model",
			Lease: 5 * time.Minute, Batch: 2, MaxAttempts: attempts, Backoff: time.Minute, Now: clk.Now})
}

func stores(t *testing.T) map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"sqlite":   func(t *testing.T) store.Store { return teststore.SQLite(t) },
		"postgres": func(t *testing.T) store.Store { return teststore.Postgres(t) },
	}
}

func TestSummariserStoresSummary(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			llm := newFakeLLM(t, summaryAnswer)
			clk := &clock{now: t0}
			rec := &usageRows{}
			saveSession(t, st, "u", "marker-001", t0)
			s := newSummariser(t, st, llm, clk, rec, "w1", 3)
			if n, err := s.RunOnce(t.Context()); err != nil || n != 0 {
				t.Fatalf("RunOnce before the idle timeout = (%d, %v), want nothing", n, err)
			}
			clk.add(31 * time.Minute)
			if n, err := s.RunOnce(t.Context()); err != nil || n != 1 {
				t.Fatalf("RunOnce = (%d, %v), want 1", n, err)
			}
			sums, total, err := st.ListSessionSummaries(t.Context(), store.SummaryFilter{UserID: "u", Page: store.Page{Page: 1, PageSize: 10}})
			if err != nil || total != 1 {
				t.Fatalf("summaries = (%d, %v), want 1", total, err)
			}
			got := sums[0]
			if got.Title != "Fix login" || got.Goals != "log in with SSO" || got.RemainingTasks != "docs" ||
				got.CompletionStatus != "partial" || got.SummaryVersion != 1 || got.FullAnalysis != summaryAnswer ||
				got.ProjectID != "proj-1" || got.ProjectRoot != "/w/app" || got.BackendModel != "gpt-4o" {
				t.Errorf("summary = %+v", got)
			}
			// The request was JSON mode with the summary model.
			var req struct {
				Model          string            `json:"model"`
				ResponseFormat map[string]string `json:"response_format"`
			}
			if err := json.Unmarshal([]byte(llm.body(0)), &req); err != nil || req.Model != "sum-model" ||
				req.ResponseFormat["type"] != "json_object" {
				t.Errorf("summariser request %s", llm.body(0))
			}
			if len(rec.rows) != 1 || rec.rows[0].Purpose != store.PurposeMemory || rec.rows[0].ProjectID != "p" ||
				rec.rows[0].TotalTokens != 120 || rec.rows[0].Status != 200 {
				t.Errorf("usage rows = %+v, want one memory row of the project", rec.rows)
			}
			// Done: nothing more to summarise until the session continues.
			clk.add(time.Hour)
			if n, _ := s.RunOnce(t.Context()); n != 0 {
				t.Fatalf("summarised again without new activity")
			}
			saveSession(t, st, "u", "marker-001", clk.Now())
			clk.add(31 * time.Minute)
			if n, err := s.RunOnce(t.Context()); err != nil || n != 1 {
				t.Fatalf("continued session: RunOnce = (%d, %v), want 1", n, err)
			}
			sums, _, _ = st.ListSessionSummaries(t.Context(), store.SummaryFilter{UserID: "u", Page: store.Page{Page: 1, PageSize: 10}})
			if len(sums) != 2 || sums[0].SummaryVersion != 2 {
				t.Fatalf("continued session: %d summaries, want version 2 added", len(sums))
			}
		})
	}
}

func TestSummariserRetriesThenGivesUp(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			llm := newFakeLLM(t, `{"title": "half an obj`)
			clk := &clock{now: t0.Add(time.Hour)}
			rec := &usageRows{}
			saveSession(t, st, "u", "marker-002", t0)
			s := newSummariser(t, st, llm, clk, rec, "w1", 2)
			if n, err := s.RunOnce(t.Context()); err != nil || n != 0 {
				t.Fatalf("RunOnce = (%d, %v)", n, err)
			}
			sess, _ := st.GetMemorySession(t.Context(), "u", "marker-002")
			if sess.State != store.MemoryActive || !strings.Contains(sess.LastError, "invalid summary") || sess.NextAttemptAt == nil {
				t.Fatalf("after the first failure: %+v", sess)
			}
			// Backing off: not retried before the back-off.
			if n, _ := s.RunOnce(t.Context()); n != 0 || llm.count("marker-002") != 1 {
				t.Fatalf("retried during the back-off (%d calls)", llm.count("marker-002"))
			}
			clk.add(2 * time.Minute)
			if _, err := s.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			sess, _ = st.GetMemorySession(t.Context(), "u", "marker-002")
			if sess.State != store.MemoryFailed || !strings.Contains(sess.LastError, "invalid summary") || llm.count("marker-002") != 2 {
				t.Fatalf("after the last attempt: state %q, reason %q, %d calls", sess.State, sess.LastError, llm.count("marker-002"))
			}
			clk.add(time.Hour)
			if _, err := s.RunOnce(t.Context()); err != nil || llm.count("marker-002") != 2 {
				t.Fatal("a failed session was tried again")
			}
			if _, total, _ := st.ListSessionSummaries(t.Context(), store.SummaryFilter{UserID: "u", Page: store.Page{Page: 1, PageSize: 10}}); total != 0 {
				t.Fatal("an invalid answer was stored as a summary")
			}
			if len(rec.rows) != 2 || rec.rows[1].Purpose != store.PurposeMemory {
				t.Errorf("usage rows = %+v, want both attempts recorded", rec.rows)
			}
		})
	}
}

// TestSummarisersNeverDoubleProcess runs two workers (replicas) on one
// PostgreSQL database at once: each session is summarised exactly once.
func TestSummarisersNeverDoubleProcess(t *testing.T) {
	url := teststore.PostgresURL(t)
	replica := func() store.Store {
		db, err := postgres.Open(t.Context(), postgres.Options{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	st, other := replica(), replica()
	const n = 12
	for i := range n {
		saveSession(t, st, "u", fmt.Sprintf("marker-%03d", i), t0)
	}
	llm := newFakeLLM(t, summaryAnswer)
	clk := &clock{now: t0.Add(time.Hour)}
	rec := &usageRows{}
	workers := []*memory.Summariser{newSummariser(t, st, llm, clk, rec, "replica-a", 3),
		newSummariser(t, other, llm, clk, rec, "replica-b", 3)}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			for {
				done, err := w.RunOnce(t.Context())
				if err != nil {
					t.Errorf("RunOnce: %v", err)
					return
				}
				if done == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		if c := llm.count(fmt.Sprintf("marker-%03d", i)); c != 1 {
			t.Errorf("session %d summarised %d times, want once", i, c)
		}
	}
	if _, total, _ := st.ListSessionSummaries(t.Context(), store.SummaryFilter{Page: store.Page{Page: 1, PageSize: 100}}); total != n {
		t.Errorf("%d summaries, want %d", total, n)
	}
}

// TestLeaseExpiryHandsOver: a replica that dies mid-summary (its claim
// never finished) leaves the session to another one once the lease ends.
func TestLeaseExpiryHandsOver(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			saveSession(t, st, "u", "marker-100", t0)
			clk := &clock{now: t0.Add(time.Hour)}
			dead, err := st.ClaimMemorySessions(t.Context(), store.MemoryClaim{Worker: "dead-replica",
				IdleBefore: clk.Now().Add(-30 * time.Minute), Now: clk.Now(), LeaseUntil: clk.Now().Add(5 * time.Minute), Limit: 1})
			if err != nil || len(dead) != 1 {
				t.Fatalf("claim = (%d, %v)", len(dead), err)
			}
			llm := newFakeLLM(t, summaryAnswer)
			s := newSummariser(t, st, llm, clk, &usageRows{}, "live-replica", 3)
			if n, _ := s.RunOnce(t.Context()); n != 0 {
				t.Fatal("took a leased session")
			}
			clk.add(5 * time.Minute)
			if n, err := s.RunOnce(t.Context()); err != nil || n != 1 {
				t.Fatalf("after the lease: RunOnce = (%d, %v), want 1", n, err)
			}
			// The dead replica's late answer is refused.
			err = st.CompleteMemorySession(t.Context(), "dead-replica", dead[0].LastActivity, &store.SessionSummary{
				ID: "00000000-0000-4000-8000-000000000001", UserID: "u", SessionID: "marker-100", SummaryVersion: 1, CreatedAt: t0})
			if err == nil {
				t.Fatal("the replica that lost its lease completed the session")
			}
		})
	}
}

// TestSummaryIsRedacted: a key-like string in the summariser's answer is
// not stored.
func TestSummaryIsRedacted(t *testing.T) {
	st := teststore.SQLite(t)
	answer := strings.Replace(summaryAnswer, `"use PKCE"`, `"use the key sk-madeup0123456789abcdefgh"`, 1)
	llm := newFakeLLM(t, answer)
	clk := &clock{now: t0.Add(time.Hour)}
	saveSession(t, st, "u", "marker-200", t0)
	if n, err := newSummariser(t, st, llm, clk, &usageRows{}, "w", 3).RunOnce(t.Context()); err != nil || n != 1 {
		t.Fatalf("RunOnce = (%d, %v)", n, err)
	}
	sums, _, err := st.ListSessionSummaries(t.Context(), store.SummaryFilter{UserID: "u", Page: store.Page{Page: 1, PageSize: 1}})
	if err != nil || len(sums) != 1 {
		t.Fatal(err)
	}
	if s := sums[0]; s.KeyDecisions != "use the key [REDACTED]" || strings.Contains(s.FullAnalysis, "madeup") {
		t.Errorf("stored %q / %q", s.KeyDecisions, s.FullAnalysis)
	}
}
