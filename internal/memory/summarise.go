package memory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Upstreams resolves the upstream of a project (its decrypted key
// included) for the summariser.
type Upstreams interface {
	Upstream(ctx context.Context, projectID string) (proxy.Upstream, error)
}

// Forwarder sends one request upstream (proxy.Forwarder).
type Forwarder interface {
	Forward(ctx context.Context, w http.ResponseWriter, req *proxy.Request, info proxy.Info, up proxy.Upstream) (proxy.Result, bool)
}

// Recorder records usage rows (usage.Recorder).
type Recorder interface {
	Usage(u store.Usage)
}

// SummariserOptions configure a Summariser. Zero values take the defaults.
type SummariserOptions struct {
	// Worker names this replica in leases; it must differ between
	// replicas (default: a random ID).
	Worker string
	// IdleTimeout is how long a session must be quiet before it is
	// summarised (MEMORY_IDLE_TIMEOUT, default 30m).
	IdleTimeout time.Duration
	// Model is the summariser's model (MEMORY_SUMMARY_MODEL); "" uses the
	// session's own last model.
	Model string
	// Lease is how long a claim holds (default 5m); a replica that dies
	// mid-summary leaves the session to another one after it. The upstream
	// call is bounded by half of it.
	Lease time.Duration
	// Poll is how often Run looks for idle sessions (default: a tenth of
	// IdleTimeout, between 1s and 1m).
	Poll time.Duration
	// Batch is how many sessions one poll claims at most (default 4).
	Batch int
	// MaxAttempts is how many attempts a session gets before it is marked
	// failed (default 3); Backoff is the wait after the first failure,
	// doubling after each (default 1m).
	MaxAttempts int
	Backoff     time.Duration
	// Redactor cleans the summariser's answer too (a model may invent a
	// key-like string); nil uses DefaultRedact.
	Redactor *Redactor
	Logger   *slog.Logger
	Now      func() time.Time
}

// Summariser summarises idle sessions. Every replica runs one; leases
// (FOR UPDATE SKIP LOCKED on PostgreSQL) keep two from summarising one
// session at once, and a session's state lives in the database, so the
// queue survives restarts.
type Summariser struct {
	st   store.MemoryStore
	ups  Upstreams
	fwd  Forwarder
	rec  Recorder
	opts SummariserOptions
	log  *slog.Logger
}

// NewSummariser returns a Summariser.
func NewSummariser(st store.MemoryStore, ups Upstreams, fwd Forwarder, rec Recorder, opts SummariserOptions) *Summariser {
	if opts.Worker == "" {
		opts.Worker = uuid.NewString()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Minute
	}
	if opts.Lease <= 0 {
		opts.Lease = 5 * time.Minute
	}
	if opts.Poll <= 0 {
		opts.Poll = min(max(opts.IdleTimeout/10, time.Second), time.Minute)
	}
	if opts.Batch <= 0 {
		opts.Batch = 4
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Redactor == nil {
		opts.Redactor, _ = NewRedactor(DefaultRedact)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Summariser{st: st, ups: ups, fwd: fwd, rec: rec, opts: opts, log: log}
}

// Run summarises idle sessions every Poll until ctx is done. A session
// being summarised when ctx ends keeps its lease until it expires, then
// another replica (or this one after a restart) takes it.
func (s *Summariser) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Poll)
	defer t.Stop()
	for {
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "memory summariser", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce claims up to Batch idle sessions and summarises them one by
// one; it returns how many it stored.
func (s *Summariser) RunOnce(ctx context.Context) (int, error) {
	now := s.opts.Now()
	sessions, err := s.st.ClaimMemorySessions(ctx, store.MemoryClaim{Worker: s.opts.Worker,
		IdleBefore: now.Add(-s.opts.IdleTimeout), Now: now, LeaseUntil: now.Add(s.opts.Lease), Limit: s.opts.Batch})
	if err != nil {
		return 0, err
	}
	done := 0
	var errs []error
	for _, sess := range sessions {
		stored, err := s.summarise(ctx, sess)
		if stored {
			done++
		}
		if err == nil {
			continue
		}
		if errors.Is(err, store.ErrLeaseLost) {
			continue // another worker has it now
		}
		errs = append(errs, err)
	}
	return done, errors.Join(errs...)
}

// summarise asks the session's upstream for its summary and stores it
// (stored), or records why it could not.
func (s *Summariser) summarise(ctx context.Context, sess *store.MemorySession) (stored bool, err error) {
	sum, reason := s.ask(ctx, sess)
	if ctx.Err() != nil {
		// Shutting down: not the session's fault. Its lease runs out and
		// another replica (or this one, restarted) tries again.
		return false, ctx.Err()
	}
	if reason == "" {
		if err := s.st.CompleteMemorySession(ctx, s.opts.Worker, sess.LastActivity, sum); err != nil {
			return false, err
		}
		return true, nil
	}
	f := store.MemoryFailure{Worker: s.opts.Worker, UserID: sess.UserID, SessionID: sess.SessionID, Reason: reason}
	if sess.Attempts >= s.opts.MaxAttempts {
		f.GiveUp = true
	} else {
		f.RetryAt = s.opts.Now().Add(s.opts.Backoff << min(sess.Attempts-1, 16))
	}
	if err := s.st.FailMemorySession(ctx, f); err != nil {
		return false, err
	}
	s.log.InfoContext(ctx, "memory summary failed", "attempt", sess.Attempts, "gave_up", f.GiveUp, "reason", reason)
	return false, nil
}

// maxSummaryAnswer bounds the summariser's answer read.
const maxSummaryAnswer = 1 << 20

// summaryPrompt is the fixed instruction of SPEC §6.6.
const summaryPrompt = `You summarise one session of a coding agent working on a software project, so that the agent's next session can continue from it. ` +
	`Answer with one JSON object and nothing else, with exactly these keys: ` +
	`"title" (a short title), "scope" (the part of the project worked on), ` +
	`"goals", "key_decisions", "touched_files", "tests_run", "errors", "remaining_tasks" (each a list of short strings, possibly empty), ` +
	`and "completion_status" (one of "complete", "partial", "blocked", "abandoned"). ` +
	`The transcript follows as a JSON array of messages; text replaced by [REDACTED] was removed on purpose.`

// ask calls the upstream and validates its answer; reason is why it
// failed ("" on success). It records the call as a usage row of the
// session's project with purpose memory.
func (s *Summariser) ask(ctx context.Context, sess *store.MemorySession) (*store.SessionSummary, string) {
	up, err := s.ups.Upstream(ctx, sess.UpstreamProjectID)
	if err != nil {
		return nil, "upstream project unavailable: " + err.Error()
	}
	model := s.opts.Model
	if model == "" {
		model = sess.Model
	}
	anthropic := up.Provider == store.ProviderAnthropic
	var body []byte
	path := "/v1/chat/completions"
	if anthropic {
		path = "/v1/messages"
		body, err = json.Marshal(map[string]any{"model": model, "max_tokens": 2048, "system": summaryPrompt,
			"messages": []Message{{Role: "user", Content: sess.Transcript}}})
	} else {
		body, err = json.Marshal(map[string]any{"model": model, "response_format": map[string]string{"type": "json_object"},
			"messages": []Message{{Role: "system", Content: summaryPrompt}, {Role: "user", Content: sess.Transcript}}})
	}
	if err != nil {
		return nil, "encode request: " + err.Error()
	}
	callCtx, cancel := context.WithTimeout(ctx, s.opts.Lease/2)
	defer cancel()
	start := s.opts.Now()
	reqID := "mem-" + uuid.NewString()
	w := &bufferWriter{header: http.Header{}, max: maxSummaryAnswer}
	res, _ := s.fwd.Forward(callCtx, w, &proxy.Request{Method: http.MethodPost, Path: path,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: body, RequestID: reqID, Received: start},
		proxy.Info{Model: model, PromptEstimate: len(body) / 4}, up)
	s.rec.Usage(store.Usage{CreatedAt: start.UTC(), RequestID: reqID, ProjectID: sess.UpstreamProjectID,
		UserID: sess.UserID, Model: res.Model, Endpoint: path, Status: res.Status,
		PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens,
		TotalTokens: res.Usage.TotalTokens, Latency: s.opts.Now().Sub(start), TTFB: res.TTFB,
		Purpose: store.PurposeMemory})
	switch {
	case res.Err != nil:
		return nil, "upstream: " + res.Err.Error()
	case res.Status != http.StatusOK:
		return nil, fmt.Sprintf("upstream answered %d", res.Status)
	case w.over:
		return nil, "upstream answer too large"
	}
	content, err := replyContent(w.buf.Bytes(), anthropic)
	if err != nil {
		return nil, "invalid summary: " + err.Error()
	}
	sum, err := parseSummary(s.opts.Redactor.Redact(content))
	if err != nil {
		return nil, "invalid summary: " + err.Error()
	}
	sum.ID = uuid.NewString()
	sum.UserID, sum.SessionID = sess.UserID, sess.SessionID
	sum.ProjectID, sum.ProjectRoot = sess.ProjectID, sess.ProjectRoot
	sum.SessionStart = &sess.CreatedAt
	sum.BackendModel = sess.Model
	sum.SummaryVersion = sess.SummaryVersion + 1
	sum.CreatedAt = s.opts.Now().UTC()
	return sum, ""
}

// replyContent returns the text of a chat completion's first choice or of
// an Anthropic message's text blocks.
func replyContent(body []byte, anthropic bool) (string, error) {
	var r struct {
		Choices []struct {
			Message struct {
				Content *string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Content []block `json:"content"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", errors.New("response is not JSON")
	}
	if anthropic {
		var text strings.Builder
		for _, b := range r.Content {
			if b.Type == "text" {
				text.WriteString(b.Text)
			}
		}
		return text.String(), nil
	}
	if len(r.Choices) == 0 || r.Choices[0].Message.Content == nil {
		return "", errors.New("no answer content")
	}
	return *r.Choices[0].Message.Content, nil
}

// summaryKeys are the keys the summary must have (SPEC §6.6).
var summaryKeys = []string{"title", "scope", "goals", "key_decisions", "touched_files", "tests_run", "errors",
	"remaining_tasks", "completion_status"}

// maxFieldBytes bounds each stored summary field.
const maxFieldBytes = 4000

// parseSummary validates the summariser's answer: one JSON object (a
// Markdown code fence around it is tolerated) with every key of
// summaryKeys, strings where singular and lists of strings where plural
// (a lone string counts as a list of one), a non-empty title. The answer
// itself is kept as FullAnalysis.
func parseSummary(content string) (*store.SessionSummary, error) {
	text := strings.TrimSpace(content)
	if strings.HasPrefix(text, "```") {
		text = strings.TrimPrefix(strings.TrimPrefix(text, "```json"), "```")
		text = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(text), "```"))
	}
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, errors.New("not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	var missing []string
	for _, k := range summaryKeys {
		if _, ok := obj[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	str := func(k string) (string, error) {
		var v string
		if err := json.Unmarshal(obj[k], &v); err != nil {
			return "", fmt.Errorf("%s is not a string", k)
		}
		return clip(strings.TrimSpace(v), maxFieldBytes), nil
	}
	list := func(k string) (string, error) {
		raw := bytes.TrimSpace(obj[k])
		if string(raw) == "null" {
			return "", nil
		}
		var items []string
		if err := json.Unmarshal(raw, &items); err != nil {
			var one string
			if json.Unmarshal(raw, &one) != nil {
				return "", fmt.Errorf("%s is not a list of strings", k)
			}
			items = []string{one}
		}
		var lines []string
		for _, it := range items {
			if it = oneLine(it); it != "" {
				lines = append(lines, it)
			}
		}
		return clip(strings.Join(lines, "\n"), maxFieldBytes), nil
	}
	var s store.SessionSummary
	var errs []error
	for _, f := range []struct {
		key  string
		dst  *string
		read func(string) (string, error)
	}{
		{"title", &s.Title, str}, {"scope", &s.Scope, str}, {"goals", &s.Goals, list},
		{"key_decisions", &s.KeyDecisions, list}, {"touched_files", &s.TouchedFiles, list},
		{"tests_run", &s.TestsRun, list}, {"errors", &s.Errors, list},
		{"remaining_tasks", &s.RemainingTasks, list}, {"completion_status", &s.CompletionStatus, str},
	} {
		v, err := f.read(f.key)
		errs = append(errs, err)
		*f.dst = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if s.Title == "" {
		return nil, errors.New("title is empty")
	}
	s.FullAnalysis = clip(content, maxSummaryAnswer)
	return &s, nil
}

// bufferWriter is the http.ResponseWriter the summariser's call is relayed
// to: it keeps up to max bytes.
type bufferWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
	max    int
	over   bool
}

func (w *bufferWriter) Header() http.Header { return w.header }

func (w *bufferWriter) WriteHeader(status int) { w.status = status }

func (w *bufferWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		w.over = true
		return len(p), nil
	}
	return w.buf.Write(p)
}
