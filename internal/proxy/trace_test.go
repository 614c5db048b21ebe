package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	traceKey    = "sk-upstream-secret-key-for-tracing"
	tracePrompt = "the prompt text must never be traced"
)

// tracedUpstream answers like the named provider and reports the
// traceparent header it received.
func tracedUpstream(t *testing.T, handler http.HandlerFunc) (*httptest.Server, <-chan string) {
	t.Helper()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func TestForwardTracesUpstreamCall(t *testing.T) {
	chatBody := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + tracePrompt + `"}]}`
	tests := []struct {
		name, provider, method, path, body string
		upstream                           http.HandlerFunc
		wantName                           string
		wantAttrs                          map[attribute.Key]attribute.Value
		wantError                          bool
	}{
		{
			name: "openai chat", provider: "openai", method: "POST", path: "/v1/chat/completions", body: chatBody,
			upstream: jsonAnswer(200, `{"id":"c1","model":"gpt-4o-2024-08-06","choices":[{"message":{"content":"secret answer"}}],`+
				`"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`),
			wantName: "chat gpt-4o",
			wantAttrs: map[attribute.Key]attribute.Value{
				"gen_ai.operation.name": attribute.StringValue("chat"), "gen_ai.system": attribute.StringValue("openai"),
				"gen_ai.provider.name": attribute.StringValue("openai"), "gen_ai.request.model": attribute.StringValue("gpt-4o"),
				"gen_ai.request.stream": attribute.BoolValue(false), "gen_ai.response.model": attribute.StringValue("gpt-4o-2024-08-06"),
				"gen_ai.usage.input_tokens": attribute.IntValue(12), "gen_ai.usage.output_tokens": attribute.IntValue(3),
				"http.request.method": attribute.StringValue("POST"), "http.response.status_code": attribute.IntValue(200),
			},
		},
		{
			name: "openai stream", provider: "openai", method: "POST", path: "/v1/chat/completions",
			body:     `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"` + tracePrompt + `"}]}`,
			upstream: openAIStream(t, "secret", " answer"),
			wantName: "chat gpt-4o",
			wantAttrs: map[attribute.Key]attribute.Value{
				"gen_ai.operation.name": attribute.StringValue("chat"), "gen_ai.system": attribute.StringValue("openai"),
				"gen_ai.provider.name": attribute.StringValue("openai"), "gen_ai.request.model": attribute.StringValue("gpt-4o"),
				"gen_ai.request.stream": attribute.BoolValue(true), "gen_ai.response.model": attribute.StringValue("gpt-4o-2024-08-06"),
				"gen_ai.usage.input_tokens": attribute.IntValue(11), "gen_ai.usage.output_tokens": attribute.IntValue(2),
				"http.request.method": attribute.StringValue("POST"), "http.response.status_code": attribute.IntValue(200),
			},
		},
		{
			name: "anthropic messages", provider: "anthropic", method: "POST", path: "/v1/messages",
			body: `{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"` + tracePrompt + `"}]}`,
			upstream: jsonAnswer(200, `{"id":"m1","type":"message","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"secret answer"}],`+
				`"usage":{"input_tokens":10,"output_tokens":6}}`),
			wantName: "chat claude-sonnet-4",
			wantAttrs: map[attribute.Key]attribute.Value{
				"gen_ai.operation.name": attribute.StringValue("chat"), "gen_ai.system": attribute.StringValue("anthropic"),
				"gen_ai.provider.name": attribute.StringValue("anthropic"), "gen_ai.request.model": attribute.StringValue("claude-sonnet-4"),
				"gen_ai.request.stream": attribute.BoolValue(false), "gen_ai.response.model": attribute.StringValue("claude-sonnet-4-20250514"),
				"gen_ai.usage.input_tokens": attribute.IntValue(10), "gen_ai.usage.output_tokens": attribute.IntValue(6),
				"http.request.method": attribute.StringValue("POST"), "http.response.status_code": attribute.IntValue(200),
			},
		},
		{
			name: "azure upstream error", provider: "azure", method: "POST", path: "/v1/embeddings",
			body:     `{"model":"embed-deployment","input":"` + tracePrompt + `"}`,
			upstream: jsonAnswer(503, `{"error":{"message":"overloaded"}}`),
			wantName: "embeddings embed-deployment", wantError: true,
			wantAttrs: map[attribute.Key]attribute.Value{
				"gen_ai.operation.name": attribute.StringValue("embeddings"), "gen_ai.system": attribute.StringValue("az.ai.openai"),
				"gen_ai.provider.name": attribute.StringValue("azure.ai.openai"), "gen_ai.request.model": attribute.StringValue("embed-deployment"),
				"gen_ai.request.stream": attribute.BoolValue(false), "gen_ai.response.model": attribute.StringValue("embed-deployment"),
				"http.request.method": attribute.StringValue("POST"), "http.response.status_code": attribute.IntValue(503),
				"error.type": attribute.StringValue("503"),
			},
		},
		{
			name: "model list is not a GenAI operation", provider: "openai", method: "GET", path: "/v1/models",
			upstream: jsonAnswer(200, `{"object":"list","data":[]}`),
			wantName: "GET upstream",
			wantAttrs: map[attribute.Key]attribute.Value{
				"gen_ai.system": attribute.StringValue("openai"), "gen_ai.provider.name": attribute.StringValue("openai"),
				"http.request.method": attribute.StringValue("GET"), "http.response.status_code": attribute.IntValue(200),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			f := New(Options{TracerProvider: tp})
			t.Cleanup(f.Close)
			srv, gotParent := tracedUpstream(t, tc.upstream)

			ctx, parent := tp.Tracer("test").Start(context.Background(), "server")
			header := http.Header{"Authorization": {"Bearer client-token"}, "Content-Type": {"application/json"},
				// A client's own trace context is replaced by the proxy's span.
				"Traceparent": {"00-11111111111111111111111111111111-2222222222222222-01"}}
			info, err := Inspect([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req := &Request{Method: tc.method, Path: tc.path, Header: header, Body: []byte(tc.body), RequestID: "req-1"}
			rec := httptest.NewRecorder()
			f.Forward(ctx, rec, req, info, Upstream{Provider: tc.provider, BaseURL: srv.URL, APIKey: traceKey})
			parent.End()

			spans := exp.GetSpans()
			if len(spans) != 2 {
				t.Fatalf("got %d spans, want the client span and its parent", len(spans))
			}
			span := spans[0]
			if span.Name != tc.wantName || span.SpanKind != trace.SpanKindClient {
				t.Errorf("span %q kind %v, want %q client", span.Name, span.SpanKind, tc.wantName)
			}
			psc := parent.SpanContext()
			if span.Parent.SpanID() != psc.SpanID() || span.SpanContext.TraceID() != psc.TraceID() {
				t.Errorf("client span is not a child of the request's span")
			}
			want := "00-" + psc.TraceID().String() + "-" + span.SpanContext.SpanID().String() + "-01"
			if got := <-gotParent; got != want {
				t.Errorf("upstream traceparent = %q, want %q", got, want)
			}

			got := map[attribute.Key]attribute.Value{}
			for _, kv := range span.Attributes {
				if kv.Key == "server.address" || kv.Key == "server.port" {
					continue
				}
				got[kv.Key] = kv.Value
				if s := kv.Value.Emit(); strings.Contains(s, "secret") || strings.Contains(s, "prompt") || strings.Contains(s, "client-token") {
					t.Errorf("attribute %s leaks a key or body text: %q", kv.Key, s)
				}
			}
			if diff := cmp.Diff(tc.wantAttrs, got, cmp.Comparer(func(a, b attribute.Value) bool { return a == b })); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
			host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
			wantPort, _ := strconv.Atoi(port)
			var gotHost string
			var gotPort int64
			for _, kv := range span.Attributes {
				switch kv.Key {
				case "server.address":
					gotHost = kv.Value.AsString()
				case "server.port":
					gotPort = kv.Value.AsInt64()
				}
			}
			if gotHost != host || gotPort != int64(wantPort) {
				t.Errorf("server = %s:%d, want %s:%d", gotHost, gotPort, host, wantPort)
			}
			if (span.Status.Code == codes.Error) != tc.wantError {
				t.Errorf("span status %v, want error %v", span.Status, tc.wantError)
			}
		})
	}
}

func TestForwardUnreachableUpstreamSpanIsAnError(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	f := New(Options{TracerProvider: tp})
	t.Cleanup(f.Close)
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()

	body := `{"model":"gpt-4o","messages":[]}`
	info, _ := Inspect([]byte(body))
	res, _ := f.Forward(context.Background(), httptest.NewRecorder(),
		&Request{Method: "POST", Path: "/v1/chat/completions", Header: http.Header{}, Body: []byte(body)}, info,
		Upstream{BaseURL: base, APIKey: traceKey})
	spans := exp.GetSpans()
	if res.Status != http.StatusBadGateway || len(spans) != 1 {
		t.Fatalf("status %d, %d spans", res.Status, len(spans))
	}
	if s := spans[0]; s.Status.Code != codes.Error || s.Status.Description != "upstream unreachable" || s.Parent.IsValid() {
		t.Errorf("span status %+v, parent %v; want an error root span", s.Status, s.Parent)
	}
}

func TestForwardWithoutTracingPassesClientTraceContext(t *testing.T) {
	srv, got := tracedUpstream(t, jsonAnswer(200, `{}`))
	f := newForwarder(t, 0)
	const clientParent = "00-11111111111111111111111111111111-2222222222222222-01"
	header := http.Header{"Traceparent": {clientParent}}
	f.Forward(context.Background(), httptest.NewRecorder(), &Request{Method: "GET", Path: "/v1/models", Header: header},
		Info{}, Upstream{BaseURL: srv.URL, APIKey: traceKey})
	if tp := <-got; tp != clientParent {
		t.Errorf("upstream traceparent = %q, want the client's %q", tp, clientParent)
	}
}

func TestOperation(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/v1/chat/completions", "chat"},
		{"POST", "/v1/messages", "chat"},
		{"POST", "/v1/responses", "chat"},
		{"POST", "/v1/completions", "text_completion"},
		{"POST", "/v1/embeddings", "embeddings"},
		{"POST", "/v1/files", ""},
		{"GET", "/v1/chat/completions", ""},
		{"GET", "/v1/models", ""},
	} {
		if got := operation(tc.method, tc.path); got != tc.want {
			t.Errorf("operation(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}
