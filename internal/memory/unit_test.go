package memory

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
)

func TestNormalizeRoot(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"", "", nil},
		{"   ", "", nil},
		{"/w/app", "/w/app", nil},
		{"/w/app/", "/w/app", nil},
		{"/w//app///", "/w/app", nil},
		{"/w/./app/.", "/w/app", nil},
		{"/w/x/../app", "/w/app", nil},
		{"/", "/", nil},
		{`C:\src\app\`, "C:/src/app", nil},
		{" /w/app ", "/w/app", nil},
		{"/w/app\n", "", ErrProjectRoot},
		{"/w/\x00app", "", ErrProjectRoot},
		{"/w/\x1b[31mapp", "", ErrProjectRoot},
		{"/w/\xffapp", "", ErrProjectRoot},
		{"/" + strings.Repeat("a", maxRootLen), "", ErrProjectRoot},
	}
	for _, tc := range tests {
		got, err := NormalizeRoot(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("NormalizeRoot(%q) = (%q, %v), want (%q, %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestCheckSessionID(t *testing.T) {
	for _, ok := range []string{"s1", "3f2c-uuid", strings.Repeat("x", maxSessionIDLen), "ses ión"} {
		if err := checkSessionID(ok); err != nil {
			t.Errorf("checkSessionID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{strings.Repeat("x", maxSessionIDLen+1), "a\rb", "a\x00", "\xfe"} {
		if err := checkSessionID(bad); !errors.Is(err, ErrSessionID) {
			t.Errorf("checkSessionID(%q) = %v, want ErrSessionID", bad, err)
		}
	}
}

func defaultRedactor(t *testing.T) *Redactor {
	t.Helper()
	r, err := NewRedactor(DefaultRedact)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRedact(t *testing.T) {
	r := defaultRedactor(t)
	secrets := []string{
		"sk-proj-abcdefghijklmnopqrstuvwx",
		"sk-ant-api03-abcdefghijklmnopqrstuvwx",
		"AKIAIOSFODNN7EXAMPLE",
		"ghp_abcdefghijklmnopqrstuvwxyz0123456789",
		"xoxb-1234567890-abcdefghij",
		"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
		"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----",
	}
	for _, s := range secrets {
		got := r.Redact("before " + s + " after")
		if got != "before [REDACTED] after" {
			t.Errorf("Redact(%q) = %q", s, got)
		}
	}
	if got := r.Redact("the task-list and skip-ahead flags"); got != "the task-list and skip-ahead flags" {
		t.Errorf("ordinary words redacted: %q", got)
	}
	if _, err := NewRedactor([]string{"("}); err == nil {
		t.Error("NewRedactor accepted an invalid pattern")
	}
}

func decodeTranscript(t *testing.T, s string) []Message {
	t.Helper()
	var msgs []Message
	if err := json.Unmarshal([]byte(s), &msgs); err != nil {
		t.Fatalf("transcript %q is not JSON: %v", s, err)
	}
	return msgs
}

func TestBuildTranscript(t *testing.T) {
	r := defaultRedactor(t)
	const secret = "sk-live-0123456789abcdefghijkl"
	openAI := `{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},` +
		`{"role":"user","content":"my key is ` + secret + `"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"read_file","arguments":"{\"path\":\"a.go\"}"}}]},` +
		`{"role":"tool","content":"package a"},` +
		`{"role":"user","content":[{"type":"text","text":"fix it"},{"type":"image_url","image_url":{"url":"x"}}]}]}`
	anthropic := `{"model":"claude","system":[{"type":"text","text":"sys"}],"messages":[` +
		`{"role":"user","content":"hello"},` +
		`{"role":"assistant","content":[{"type":"text","text":"reading"},{"type":"tool_use","name":"read","input":{"p":"b.go"}}]},` +
		`{"role":"user","content":[{"type":"tool_result","content":[{"type":"text","text":"package b"}]}]}]}`
	tests := []struct {
		name   string
		body   string
		answer *proxy.Answer
		want   []Message
	}{
		{"openai json answer", openAI,
			&proxy.Answer{Text: []byte(`{"choices":[{"message":{"role":"assistant","content":"done"}}]}`)},
			[]Message{{"system", "be brief"}, {"user", "my key is [REDACTED]"},
				{"assistant", `[tool call read_file {"path":"a.go"}]`}, {"tool", "package a"},
				{"user", "fix it\n[image_url]"}, {"assistant", "done"}}},
		{"openai streamed answer", openAI, &proxy.Answer{Streamed: true, Text: []byte(`do\"ne\n`)},
			[]Message{{"system", "be brief"}, {"user", "my key is [REDACTED]"},
				{"assistant", `[tool call read_file {"path":"a.go"}]`}, {"tool", "package a"},
				{"user", "fix it\n[image_url]"}, {"assistant", "do\"ne\n"}}},
		{"anthropic json answer", anthropic,
			&proxy.Answer{Text: []byte(`{"content":[{"type":"text","text":"ok ` + secret + `"}]}`)},
			[]Message{{"system", "sys"}, {"user", "hello"}, {"assistant", "reading\n[tool use read {\"p\":\"b.go\"}]"},
				{"user", "[tool result] package b"}, {"assistant", "ok [REDACTED]"}}},
		{"anthropic streamed answer cut", anthropic, &proxy.Answer{Streamed: true, Truncated: true, Text: []byte(`part`)},
			[]Message{{"system", "sys"}, {"user", "hello"}, {"assistant", "reading\n[tool use read {\"p\":\"b.go\"}]"},
				{"user", "[tool result] package b"}, {"assistant", "part [answer cut]"}}},
		{"json answer too large", `{"messages":[{"role":"user","content":"q"}]}`, &proxy.Answer{Truncated: true},
			[]Message{{"user", "q"}, {"assistant", "[answer too large to keep]"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := buildTranscript([]byte(tc.body), tc.answer, r, 64<<10)
			if !ok {
				t.Fatal("not a chat body")
			}
			if strings.Contains(got, "sk-live") {
				t.Fatalf("secret kept: %s", got)
			}
			if d := cmp.Diff(tc.want, decodeTranscript(t, got)); d != "" {
				t.Errorf("transcript (-want +got):\n%s", d)
			}
		})
	}
	if _, ok := buildTranscript([]byte(`[1]`), nil, r, 1024); ok {
		t.Error("a non-object body gave a transcript")
	}
}

func TestBuildTranscriptCap(t *testing.T) {
	r := defaultRedactor(t)
	var msgs []string
	for i := range 50 {
		msgs = append(msgs, `{"role":"user","content":"turn `+strings.Repeat("x", 100)+` `+string(rune('a'+i%26))+`"}`)
	}
	// The oldest kept turn holds a secret that a cut would split.
	secret := "sk-" + strings.Repeat("s", 40)
	msgs[45] = `{"role":"user","content":"` + strings.Repeat("y", 300) + " " + secret + " " + strings.Repeat("z", 20) + `"}`
	body := `{"messages":[` + strings.Join(msgs, ",") + `]}`
	for _, max := range []int{1024, 700, 4096} {
		got, ok := buildTranscript([]byte(body), &proxy.Answer{Streamed: true, Text: []byte("final answer")}, r, max)
		if !ok {
			t.Fatal("not a chat body")
		}
		if len(got) > max {
			t.Errorf("max %d: transcript is %d bytes", max, len(got))
		}
		if strings.Contains(got, "sss") {
			t.Errorf("max %d: part of a secret survived the cut: %s", max, got)
		}
		ms := decodeTranscript(t, got)
		if last := ms[len(ms)-1]; last != (Message{"assistant", "final answer"}) {
			t.Errorf("max %d: newest turn lost: %+v", max, last)
		}
		if len(ms) >= 51 {
			t.Errorf("max %d: nothing dropped", max)
		}
	}
	// A single huge turn is cut from its start.
	huge := `{"messages":[{"role":"user","content":"` + strings.Repeat("é", 5000) + `END"}]}`
	got, _ := buildTranscript([]byte(huge), nil, r, 1024)
	ms := decodeTranscript(t, got)
	if len(got) > 1024 || len(ms) != 1 || !strings.HasSuffix(ms[0].Content, "END") || !strings.HasPrefix(ms[0].Content, "… ") {
		t.Errorf("huge turn: %d bytes, %d turns", len(got), len(ms))
	}
}

func TestInjectOpenAI(t *testing.T) {
	ctx := `ctx "quoted"`
	msg := `{"role":"system","content":"ctx \"quoted\""}`
	tests := []struct{ name, body, want string }{
		{"after the system messages",
			`{"model":"m", "messages": [ {"role":"system","content":"a"}, {"role":"developer","content":"b"}, {"role":"user","content":"q"} ], "temperature": 0.10}`,
			`{"model":"m", "messages": [ {"role":"system","content":"a"}, {"role":"developer","content":"b"}, ` + msg + `,{"role":"user","content":"q"} ], "temperature": 0.10}`},
		{"first without a system message",
			`{"messages":[{"role":"user","content":"q"}],"stream":true}`,
			`{"messages":[` + msg + `,{"role":"user","content":"q"}],"stream":true}`},
		{"only system messages",
			`{"messages":[{"role":"system","content":"a"}]}`,
			`{"messages":[{"role":"system","content":"a"},` + msg + `]}`},
		{"empty", `{"messages":[ ]}`, `{"messages":[` + msg + ` ]}`},
	}
	for _, tc := range tests {
		got, err := injectOpenAI([]byte(tc.body), ctx)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: injectOpenAI =\n%s (%v)\nwant\n%s", tc.name, got, err, tc.want)
		}
		if !json.Valid(got) {
			t.Errorf("%s: result is not JSON", tc.name)
		}
	}
	for _, bad := range []string{`{"model":"m"}`, `{"messages":"x"}`, `{"messages":[],"messages":[]}`} {
		if _, err := injectOpenAI([]byte(bad), ctx); err == nil {
			t.Errorf("injectOpenAI(%s) succeeded", bad)
		}
	}
}

func TestInjectAnthropic(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"no system", `{"model":"c","max_tokens":5,"messages":[]}`, `{"system":"ctx","model":"c","max_tokens":5,"messages":[]}`},
		{"string system", `{"system":"be \u0062rief","messages":[]}`, `{"system":"be brief\n\nctx","messages":[]}`},
		{"block system", `{"system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}}],"messages":[]}`,
			`{"system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"text":"ctx","type":"text"}],"messages":[]}`},
		{"empty blocks", `{"system":[],"messages":[]}`, `{"system":[{"text":"ctx","type":"text"}],"messages":[]}`},
		{"null", `{"system":null,"messages":[]}`, `{"system":"ctx","messages":[]}`},
		{"empty object", `{}`, `{"system":"ctx"}`},
	}
	for _, tc := range tests {
		got, err := injectAnthropic([]byte(tc.body), "ctx")
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: injectAnthropic =\n%s (%v)\nwant\n%s", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range []string{`{"system":1}`, `{"system":"a","system":"b"}`, `[]`} {
		if _, err := injectAnthropic([]byte(bad), "ctx"); err == nil {
			t.Errorf("injectAnthropic(%s) succeeded", bad)
		}
	}
}

func TestRank(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	sum := func(title string, age time.Duration, tasks string) *store.SessionSummary {
		return &store.SessionSummary{Title: title, CreatedAt: now.Add(-age), RemainingTasks: tasks}
	}
	fresh := sum("refactor billing", time.Hour, "")
	old := sum("login flow with oauth", 60*24*time.Hour, "")
	oldTasks := sum("docs", 60*24*time.Hour, "write the changelog")
	cands := []*store.SessionSummary{old, fresh, oldTasks}

	titles := func(s []*store.SessionSummary) []string {
		var out []string
		for _, x := range s {
			out = append(out, x.Title)
		}
		return out
	}
	tests := []struct {
		name, prompt string
		n            int
		min          float64
		want         []string
	}{
		{"recency first", "hello", 3, 0, []string{"refactor billing", "docs", "login flow with oauth"}},
		{"keywords beat recency", "fix the oauth login", 3, 0, []string{"login flow with oauth", "refactor billing", "docs"}},
		{"at most n", "hello", 1, 0, []string{"refactor billing"}},
		{"threshold drops old unrelated ones", "hello", 3, 0.3, []string{"refactor billing"}},
		{"open tasks count", "hello", 3, 0.2, []string{"refactor billing", "docs"}},
		{"none above a high threshold", "hello", 3, 5, nil},
	}
	for _, tc := range tests {
		got := titles(rank(cands, tc.prompt, now, tc.n, tc.min))
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}

func TestParseSummary(t *testing.T) {
	good := `{"title":"Fix login","scope":"auth","goals":["a","b"],"key_decisions":[],"touched_files":["auth.go"],` +
		`"tests_run":"go test ./...","errors":null,"remaining_tasks":["docs"],"completion_status":"partial"}`
	s, err := parseSummary(good)
	if err != nil {
		t.Fatal(err)
	}
	want := &store.SessionSummary{Title: "Fix login", Scope: "auth", Goals: "a\nb", TouchedFiles: "auth.go",
		TestsRun: "go test ./...", RemainingTasks: "docs", CompletionStatus: "partial", FullAnalysis: good}
	if d := cmp.Diff(want, s); d != "" {
		t.Errorf("parseSummary (-want +got):\n%s", d)
	}
	if _, err := parseSummary("```json\n" + good + "\n```"); err != nil {
		t.Errorf("fenced: %v", err)
	}
	for _, bad := range []string{
		"not json", `[]`, `{"title":"x"}`, good + good,
		strings.Replace(good, `"title":"Fix login"`, `"title":""`, 1),
		strings.Replace(good, `"goals":["a","b"]`, `"goals":[1]`, 1),
		strings.Replace(good, `"scope":"auth"`, `"scope":["auth"]`, 1),
	} {
		if _, err := parseSummary(bad); err == nil {
			t.Errorf("parseSummary(%s) accepted", bad)
		}
	}
}

func TestCaptureQueueBoundedAndCoalesced(t *testing.T) {
	m := New(nil, Options{QueueSize: 2, MaxBytes: 4096})
	begin := func(session string) *Turn {
		t.Helper()
		turn, err := m.Begin(Request{Header: sessionHeader(session), Method: http.MethodPost,
			Path: "/v1/chat/completions", Body: []byte(`{"messages":[]}`), User: "u"})
		if err != nil || turn == nil {
			t.Fatalf("Begin(%s) = (%v, %v)", session, turn, err)
		}
		return turn
	}
	begin("a").Finish(http.StatusOK)
	begin("a").Finish(http.StatusOK) // replaces the queued capture of a
	begin("b").Finish(http.StatusOK)
	begin("c").Finish(http.StatusOK) // queue full: dropped
	begin("d").Finish(http.StatusBadGateway)
	turn := begin("e")
	turn.Finish(http.StatusOK)
	turn.Finish(http.StatusOK)
	if s := m.Stats(); s.Queued != 2 || s.Dropped != 2 {
		t.Fatalf("stats %+v, want 2 queued (a, b) and 2 dropped (c, e)", s)
	}
	for _, r := range []Request{
		{Header: http.Header{}, Method: http.MethodPost, Path: "/v1/chat/completions", Body: []byte(`{}`)},
		{Header: sessionHeader("s"), Method: http.MethodGet, Path: "/v1/models"},
		{Header: sessionHeader("s"), Method: http.MethodPost, Path: "/v1/embeddings", Body: []byte(`{}`)},
	} {
		if turn, err := m.Begin(r); turn != nil || err != nil {
			t.Errorf("Begin(%s %s) = (%v, %v), want no memory", r.Method, r.Path, turn, err)
		}
	}
}

func sessionHeader(id string) http.Header {
	h := http.Header{}
	h.Set(HeaderSessionID, id)
	return h
}
