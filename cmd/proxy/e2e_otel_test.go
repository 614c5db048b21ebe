package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// otlpReceiver is a minimal OTLP/HTTP trace receiver (POST /v1/traces,
// protobuf), keeping every span it is sent.
type otlpReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests int
	services []string // service.name of each export's resources
	spans    []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(r.export))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) export(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	body, err := io.ReadAll(req.Body)
	msg := new(collectortrace.ExportTraceServiceRequest)
	if err == nil {
		err = proto.Unmarshal(body, msg)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests++
	for _, rs := range msg.GetResourceSpans() {
		r.services = append(r.services, stringAttr(rs.GetResource().GetAttributes(), "service.name"))
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	r.mu.Unlock()
	resp, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// trace returns the spans received so far whose trace id is traceID.
func (r *otlpReceiver) trace(traceID string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if hex.EncodeToString(s.GetTraceId()) == traceID {
			out = append(out, s)
		}
	}
	return out
}

func (r *otlpReceiver) requestCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func stringAttr(attrs []*commonpb.KeyValue, key string) string {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func intAttr(attrs []*commonpb.KeyValue, key string) (int64, bool) {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return kv.GetValue().GetIntValue(), true
		}
	}
	return 0, false
}

// clearOTelEnv keeps an OTEL_* setting of the test's own environment from
// reaching the proxies it starts (later entries override earlier ones).
func clearOTelEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
		"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER"} {
		t.Setenv(k, "")
	}
}

// tracedChat sends a chat completion carrying the client's traceparent and
// returns the status.
func tracedChat(t *testing.T, base, secret, traceparent string) int {
	t.Helper()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hello please"}]}`
	req, err := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

func TestOTLPTraceOfOneRequestOnPostgres(t *testing.T) {
	clearOTelEnv(t)
	db := teststore.PostgresURL(t)
	rcv := newOTLPReceiver(t)
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=llm-proxy-e2e"}
	// The OTel SDK reads its exporter, batching and resource settings from
	// the process environment itself; run's getenv decides whether tracing
	// starts at all.
	for _, kv := range otel {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	g := &gateway{up: newFakeUpstream(t), dir: t.TempDir()}
	g.p = startProxy(t, g.dir, append([]string{"DATABASE_URL=" + db, "ENCRYPTION_KEY=" + testEncryptionKey, "MANAGEMENT_TOKEN=" + mgmtToken}, otel...)...)
	projectID := g.project(t, "traced", "openai", g.up.URL+"/v1")
	_, secret := g.token(t, projectID, nil)

	// The client's trace continues through the proxy; the token has never
	// been used, so authentication reads it from PostgreSQL.
	const (
		traceID      = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpanID = "00f067aa0ba902b7"
	)
	if code := tracedChat(t, g.p.addr, secret, "00-"+traceID+"-"+clientSpanID+"-01"); code != http.StatusOK {
		t.Fatalf("chat status %d", code)
	}

	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range rcv.trace(traceID) {
				t.Logf("received span %q kind %v id %x parent %x", s.GetName(), s.GetKind(), s.GetSpanId(), s.GetParentSpanId())
			}
		}
	})
	var server, upstream *tracepb.Span
	var dbSpans []*tracepb.Span
	waitFor(t, 15*time.Second, "server, upstream and database spans", func() bool {
		server, upstream, dbSpans = nil, nil, nil
		for _, s := range rcv.trace(traceID) {
			switch {
			case s.GetKind() == tracepb.Span_SPAN_KIND_SERVER:
				server = s
			case stringAttr(s.GetAttributes(), "gen_ai.system") != "":
				upstream = s
			case stringAttr(s.GetAttributes(), "db.system.name") == "postgresql" ||
				stringAttr(s.GetAttributes(), "db.system") == "postgresql":
				dbSpans = append(dbSpans, s)
			}
		}
		return server != nil && upstream != nil && len(dbSpans) > 0
	})
	all := rcv.trace(traceID)
	byID := map[string]*tracepb.Span{}
	for _, s := range all {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	// descends reports whether s has the server span among its ancestors.
	descends := func(s *tracepb.Span) bool {
		for p := hex.EncodeToString(s.GetParentSpanId()); p != ""; {
			if p == hex.EncodeToString(server.GetSpanId()) {
				return true
			}
			parent := byID[p]
			if parent == nil {
				return false
			}
			p = hex.EncodeToString(parent.GetParentSpanId())
		}
		return false
	}

	if server.GetName() != "POST /v1/*" || stringAttr(server.GetAttributes(), "http.route") != "/v1/*" {
		t.Errorf("server span %q route %q, want POST /v1/*", server.GetName(), stringAttr(server.GetAttributes(), "http.route"))
	}
	if status, _ := intAttr(server.GetAttributes(), "http.response.status_code"); status != 200 {
		t.Errorf("server span status code %d", status)
	}
	if got := hex.EncodeToString(server.GetParentSpanId()); got != clientSpanID {
		t.Errorf("server span parent %q, want the client's span %s", got, clientSpanID)
	}

	if upstream.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || upstream.GetName() != "chat gpt-4o-mini" || !descends(upstream) {
		t.Errorf("upstream span %q kind %v, descends from the server span: %v", upstream.GetName(), upstream.GetKind(), descends(upstream))
	}
	ua := upstream.GetAttributes()
	if stringAttr(ua, "gen_ai.system") != "openai" || stringAttr(ua, "gen_ai.request.model") != "gpt-4o-mini" ||
		stringAttr(ua, "gen_ai.response.model") != "gpt-4o-mini" {
		t.Errorf("upstream span GenAI attributes: %v", ua)
	}
	in, okIn := intAttr(ua, "gen_ai.usage.input_tokens")
	out, okOut := intAttr(ua, "gen_ai.usage.output_tokens")
	if !okIn || !okOut || in != 3 || out != int64(len(streamWords)) {
		t.Errorf("upstream span usage = %d/%d (present %v/%v), want 3/%d", in, out, okIn, okOut, len(streamWords))
	}
	if status, _ := intAttr(ua, "http.response.status_code"); status != 200 {
		t.Errorf("upstream span status code %d", status)
	}

	linked := 0
	for _, s := range dbSpans {
		if descends(s) {
			linked++
		}
	}
	if linked == 0 {
		t.Errorf("none of the %d database spans descends from the server span", len(dbSpans))
	}

	seen := g.up.headers()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(seen))
	}
	wantParent := "00-" + traceID + "-" + hex.EncodeToString(upstream.GetSpanId()) + "-01"
	if got := seen[0].Get("Traceparent"); got != wantParent {
		t.Errorf("upstream traceparent = %q, want %q", got, wantParent)
	}

	for _, s := range all {
		for _, kv := range s.GetAttributes() {
			v := kv.GetValue().String()
			if strings.Contains(v, upstreamKey) || strings.Contains(v, secret) || strings.Contains(v, "say hello please") {
				t.Errorf("span %q attribute %s leaks a secret or the prompt: %s", s.GetName(), kv.GetKey(), v)
			}
		}
	}
	rcv.mu.Lock()
	services := rcv.services
	rcv.mu.Unlock()
	for _, name := range services {
		if name != "llm-proxy-e2e" {
			t.Errorf("service.name %q, want OTEL_SERVICE_NAME's", name)
		}
	}
}

func TestNoTracingWithoutAnOTLPEndpoint(t *testing.T) {
	clearOTelEnv(t)
	rcv := newOTLPReceiver(t)
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"no endpoint", []string{"OTEL_SERVICE_NAME=llm-proxy-e2e", "OTEL_TRACES_SAMPLER=always_on"}},
		{"sdk disabled", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL, "OTEL_SDK_DISABLED=true", "OTEL_BSP_SCHEDULE_DELAY=100"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, tc.env...)
			projectID := g.project(t, "untraced", "openai", g.up.URL+"/v1")
			_, secret := g.token(t, projectID, nil)
			if code := tracedChat(t, g.p.addr, secret, ""); code != http.StatusOK {
				t.Fatalf("chat status %d", code)
			}
			g.p.stop(t) // a running exporter would flush on shutdown
			if n := rcv.requestCount(); n != 0 {
				t.Errorf("the receiver got %d exports with tracing off", n)
			}
			if out := g.p.output.String(); strings.Contains(out, "tracing enabled") {
				t.Errorf("proxy reports tracing enabled:\n%s", out)
			}
			for _, h := range g.up.headers() {
				if tp := h.Get("Traceparent"); tp != "" {
					t.Errorf("upstream got traceparent %q with tracing off", tp)
				}
			}
		})
	}
}
