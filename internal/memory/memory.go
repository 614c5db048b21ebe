// Package memory is the gateway's cross-session memory for coding agents
// (SPEC §6.6): it captures each session's latest transcript off the
// request path, summarises idle sessions through the session's own
// upstream (Summariser), and hands the relevant summaries back at the
// start of the next session of the same user and project root.
//
// Memory is isolated per user (an agent token's identity, else the
// withering token's project) and per project root: no lookup ever crosses
// either. Transcripts are redacted (MEMORY_REDACT) and capped
// (MEMORY_MAX_BYTES) before they are stored; nothing of them is logged.
package memory

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Request headers of memory (SPEC §6.6) and the response header.
const (
	HeaderSessionID   = "X-Session-ID"
	HeaderProjectRoot = "X-Project-Root"
	HeaderInjected    = "X-Memory-Injected"
)

// Options configure Memory. Zero values take the defaults.
type Options struct {
	MaxInject int     // summaries injected at most (MEMORY_MAX_INJECT); 0 injects none
	MinScore  float64 // relevance threshold (MEMORY_MIN_SCORE)
	MaxBytes  int     // transcript cap (MEMORY_MAX_BYTES, default 64 KiB)
	// Redactor cleans transcripts; nil uses DefaultRedact.
	Redactor *Redactor
	// QueueSize bounds the sessions waiting for their transcript to be
	// written (default 4096); past it captures are dropped and counted.
	QueueSize int
	// FlushInterval is how often the writer writes the queued transcripts
	// (default 1s). Only each session's latest capture is written, so an
	// agent's burst of requests costs one parse and one write.
	FlushInterval time.Duration
	// LookupTimeout bounds the database work on a session's first request
	// (default 2s); past it the request goes on without memory.
	LookupTimeout time.Duration
	Logger        *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Stats are Memory's counters, for /metrics.
type Stats struct {
	Queued       int   // captures waiting to be written
	Dropped      int64 // captures dropped because the queue was full
	Written      int64 // transcripts written
	WriteErrors  int64 // transcripts that could not be written
	Injected     int64 // requests that received summaries
	LookupErrors int64 // first requests served without memory after a database error
}

// Memory captures transcripts and injects summaries. It is safe for
// concurrent use; Run owns its writer goroutine.
type Memory struct {
	st   store.MemoryStore
	opts Options
	red  *Redactor
	log  *slog.Logger

	mu       sync.Mutex
	pending  map[sessionKey]*capture
	seen     boundedSet[sessionKey]     // sessions whose first request was handled here
	projects boundedMap[string, string] // user + "\x00" + root → project ID

	dropped, written, writeErrs, injected, lookupErrs atomic.Int64
}

type sessionKey struct{ user, session string }

// capture is one finished request waiting for the writer.
type capture struct {
	user, session, root, upstream, model string
	body                                 []byte
	answer                               *proxy.Answer
	at                                   time.Time
}

// maxCached bounds the in-process caches of sessions and project IDs;
// past it they start over (the database is the truth).
const maxCached = 100_000

// New returns a Memory over st.
func New(st store.MemoryStore, opts Options) *Memory {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 64 << 10
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	red := opts.Redactor
	if red == nil {
		red, _ = NewRedactor(DefaultRedact)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Memory{st: st, opts: opts, red: red, log: log, pending: map[sessionKey]*capture{},
		seen:     newBoundedSet[sessionKey](maxCached),
		projects: newBoundedMap[string, string](maxCached)}
}

// Request is what the memory step reads of a client request.
type Request struct {
	Header http.Header
	Method string
	Path   string // the decoded client path (/v1/...)
	Body   []byte // the whole body, already checked to be a JSON object
	// User is the memory identity (see UserOf).
	User string
	// UpstreamProjectID is the project whose upstream serves the request
	// and will summarise the session.
	UpstreamProjectID string
	Model             string
	RequestID         string
}

// UserOf returns the memory identity of a caller: the agent token's
// identity when there is one, else the withering token's project.
func UserOf(identity, projectID string) string {
	if identity != "" {
		return identity
	}
	return "project:" + projectID
}

// Turn is the memory step of one request. Body is what to forward (the
// client's body, or after Inject a copy with the context message);
// Injected is the number of summaries in it; Answer must be passed to the
// forwarder. A Turn is used by one request's goroutine.
type Turn struct {
	Body     []byte
	Injected int
	Answer   *proxy.Answer

	m         *Memory
	req       Request
	anthropic bool
	c         capture
	done      bool
}

// Begin reads a request's memory headers, without I/O. It returns nil (no
// memory) without X-Session-ID or for requests other than a chat POST
// (OpenAI chat completions, Anthropic messages), and a *BadHeaderError for
// an X-Session-ID or X-Project-Root the client must fix.
func (m *Memory) Begin(r Request) (*Turn, error) {
	sid := r.Header.Get(HeaderSessionID)
	if sid == "" {
		return nil, nil
	}
	if err := checkSessionID(sid); err != nil {
		return nil, &BadHeaderError{Header: HeaderSessionID, Err: err}
	}
	root, err := NormalizeRoot(r.Header.Get(HeaderProjectRoot))
	if err != nil {
		return nil, &BadHeaderError{Header: HeaderProjectRoot, Err: err}
	}
	anthropic, ok := chatPath(r.Method, r.Path)
	if !ok || len(r.Body) == 0 {
		return nil, nil
	}
	return &Turn{Body: r.Body, m: m, req: r, anthropic: anthropic,
		// A JSON answer is kept whole to be parsed (a cut one cannot be),
		// so it gets room beyond the transcript cap.
		Answer: &proxy.Answer{Max: 4 * m.opts.MaxBytes},
		c: capture{user: r.User, session: sid, root: root, upstream: r.UpstreamProjectID, model: r.Model,
			body: r.Body, at: m.opts.Now()}}, nil
}

// Inject runs once the request is admitted: on the first request of a
// session (anywhere in the cluster) it sets Body to the request with the
// context of the most relevant summaries and Injected to their number.
// Database trouble costs the request its memory, never the request.
func (t *Turn) Inject(ctx context.Context) {
	m := t.m
	key := sessionKey{t.c.user, t.c.session}
	if m.seen.has(key) {
		return
	}
	m.seen.add(key)
	body, n, err := m.inject(ctx, t)
	if err != nil {
		m.lookupErrs.Add(1)
		m.log.WarnContext(ctx, "memory lookup failed; request served without memory", "request_id", t.req.RequestID, "err", err)
		return
	}
	if n > 0 {
		t.Body, t.Injected = body, n
		m.injected.Add(1)
	}
}

// inject notes the session and, when this is its first request anywhere,
// returns the body with the context of up to MaxInject summaries.
func (m *Memory) inject(ctx context.Context, t *Turn) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.LookupTimeout)
	defer cancel()
	r, root, now := t.req, t.c.root, t.c.at
	projectID, err := m.projectID(ctx, r.User, root, now)
	if err != nil {
		return nil, 0, err
	}
	created, err := m.st.StartMemorySession(ctx, &store.MemorySession{UserID: r.User,
		SessionID: t.c.session, ProjectID: projectID, ProjectRoot: root,
		UpstreamProjectID: r.UpstreamProjectID, Model: r.Model, LastActivity: now, CreatedAt: now})
	if err != nil || !created || m.opts.MaxInject == 0 {
		return nil, 0, err
	}
	cands, _, err := m.st.ListSessionSummaries(ctx, store.SummaryFilter{UserID: r.User, ProjectID: projectID,
		Page: store.Page{Page: 1, PageSize: candidates}})
	if err != nil {
		return nil, 0, err
	}
	// Summaries without a project root match only sessions without one.
	cands = slices.DeleteFunc(cands, func(s *store.SessionSummary) bool { return s.ProjectRoot != root })
	sums := rank(cands, lastUserText(r.Body), now, m.opts.MaxInject, m.opts.MinScore)
	if len(sums) == 0 {
		return nil, 0, nil
	}
	text := renderContext(sums)
	var body []byte
	if t.anthropic {
		body, err = injectAnthropic(r.Body, text)
	} else {
		body, err = injectOpenAI(r.Body, text)
	}
	if err != nil {
		// A body the upstream will judge; it goes as it came.
		m.log.DebugContext(ctx, "memory context not injected", "request_id", r.RequestID, "err", err)
		return nil, 0, nil
	}
	return body, len(sums), nil
}

// candidates is how many recent summaries are scored for injection.
const candidates = 50

// projectID maps (user, root) to its stable ID, cached in process.
func (m *Memory) projectID(ctx context.Context, user, root string, now time.Time) (string, error) {
	if root == "" {
		return "", nil
	}
	k := user + "\x00" + root
	if id, ok := m.projects.get(k); ok {
		return id, nil
	}
	id, err := m.st.ProjectDir(ctx, user, root, now)
	if err != nil {
		return "", err
	}
	m.projects.put(k, id)
	return id, nil
}

// Finish hands the finished request to the writer when the upstream
// answered 2xx. It never blocks: when the queue is full the capture is
// dropped and counted. Finish is idempotent.
func (t *Turn) Finish(status int) {
	if t == nil || t.done {
		return
	}
	t.done = true
	if status < 200 || status > 299 {
		return
	}
	t.c.answer = t.Answer
	m := t.m
	key := sessionKey{t.c.user, t.c.session}
	m.mu.Lock()
	_, queued := m.pending[key]
	if !queued && len(m.pending) >= m.opts.QueueSize {
		m.mu.Unlock()
		m.dropped.Add(1)
		return
	}
	// Only the latest request of a session matters: a newer capture
	// replaces a queued one.
	if prev := m.pending[key]; prev == nil || !t.c.at.Before(prev.at) {
		m.pending[key] = &t.c
	}
	m.mu.Unlock()
}

// writeTimeout bounds one transcript write.
const writeTimeout = 5 * time.Second

// Run writes captured transcripts every FlushInterval until ctx is done,
// then writes what is still queued (bounded by writeTimeout each) and
// returns nil.
func (m *Memory) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.flush(ctx)
		case <-ctx.Done():
			m.flush(context.WithoutCancel(ctx))
			return nil
		}
	}
}

// Flush writes every queued transcript now (tests and shutdown).
func (m *Memory) Flush(ctx context.Context) { m.flush(ctx) }

func (m *Memory) flush(ctx context.Context) {
	m.mu.Lock()
	batch := m.pending
	m.pending = make(map[sessionKey]*capture, len(batch))
	m.mu.Unlock()
	for _, c := range batch {
		if err := m.write(ctx, c); err != nil {
			m.writeErrs.Add(1)
			m.log.WarnContext(ctx, "memory transcript not written", "err", err)
			continue
		}
		m.written.Add(1)
	}
}

// write builds the session's transcript (redacted, capped) and stores it.
func (m *Memory) write(ctx context.Context, c *capture) error {
	transcript, ok := buildTranscript(c.body, c.answer, m.red, m.opts.MaxBytes)
	if !ok {
		return nil // not a chat body after all: nothing to keep
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	projectID, err := m.projectID(ctx, c.user, c.root, c.at)
	if err != nil {
		return err
	}
	return m.st.SaveTranscript(ctx, &store.MemorySession{UserID: c.user, SessionID: c.session, ProjectID: projectID,
		ProjectRoot: c.root, UpstreamProjectID: c.upstream, Model: c.model, Transcript: transcript,
		LastActivity: c.at, CreatedAt: c.at})
}

// Stats returns the counters.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	queued := len(m.pending)
	m.mu.Unlock()
	return Stats{Queued: queued, Dropped: m.dropped.Load(), Written: m.written.Load(),
		WriteErrors: m.writeErrs.Load(), Injected: m.injected.Load(), LookupErrors: m.lookupErrs.Load()}
}

// chatPath reports whether a request is a chat POST memory applies to,
// and whether it speaks Anthropic's messages API.
func chatPath(method, path string) (anthropic, ok bool) {
	if method != http.MethodPost {
		return false, false
	}
	switch strings.TrimSuffix(strings.TrimPrefix(path, "/v1"), "/") {
	case "/chat/completions":
		return false, true
	case "/messages":
		return true, true
	}
	return false, false
}

// BadHeaderError is a memory header the client must fix (400).
type BadHeaderError struct {
	Header string
	Err    error
}

func (e *BadHeaderError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *BadHeaderError) Unwrap() error { return e.Err }

// InjectedHeader is the X-Memory-Injected value for n summaries.
func InjectedHeader(n int) string { return strconv.Itoa(n) }
