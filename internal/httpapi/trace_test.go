package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestServerSpans(t *testing.T) {
	t.Parallel()
	const (
		clientTrace = "0af7651916cd43dd8448eb211c80319c"
		clientSpan  = "b7ad6b7169203331"
	)
	tests := []struct {
		name, method, path, traceparent string
		wantName, wantRoute             string
		wantStatus                      int
		wantError                       bool
	}{
		{name: "route pattern, not the raw path", method: "GET", path: "/manage/projects/p-123",
			wantName: "GET /manage/projects/:id", wantRoute: "/manage/projects/:id", wantStatus: 404},
		{name: "continues the client's trace", method: "GET", path: "/healthz",
			traceparent: "00-" + clientTrace + "-" + clientSpan + "-01",
			wantName:    "GET /healthz", wantRoute: "/healthz", wantStatus: 200},
		{name: "proxy wildcard", method: "POST", path: "/v1/files/file-abc",
			wantName: "POST /v1/*", wantRoute: "/v1/*", wantStatus: 401},
		{name: "unmatched path", method: "GET", path: "/nope/123",
			wantName: "GET", wantRoute: "", wantStatus: 404},
		{name: "5xx is an error", method: "GET", path: "/boom",
			wantName: "GET /boom", wantRoute: "/boom", wantStatus: 500, wantError: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			var logs bytes.Buffer
			s := New(Deps{TracerProvider: tp, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			s.e.GET("/boom", func(echo.Context) error { panic("boom") })
			s.e.POST("/v1/*", func(echo.Context) error { return &Error{Status: http.StatusUnauthorized, Message: "no"} })

			req := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.traceparent != "" {
				req.Header.Set("Traceparent", tc.traceparent)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tc.wantStatus)
			}

			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("got %d spans, want 1", len(spans))
			}
			span := spans[0]
			if span.Name != tc.wantName || span.SpanKind != trace.SpanKindServer {
				t.Errorf("span %q kind %v, want %q server", span.Name, span.SpanKind, tc.wantName)
			}
			attrs := map[attribute.Key]attribute.Value{}
			for _, kv := range span.Attributes {
				attrs[kv.Key] = kv.Value
			}
			if got := attrs["http.route"].AsString(); got != tc.wantRoute {
				t.Errorf("http.route = %q, want %q", got, tc.wantRoute)
			}
			if got := attrs["http.request.method"].AsString(); got != tc.method {
				t.Errorf("http.request.method = %q", got)
			}
			if got := attrs["http.response.status_code"].AsInt64(); got != int64(tc.wantStatus) {
				t.Errorf("http.response.status_code = %d, want %d", got, tc.wantStatus)
			}
			if (span.Status.Code == codes.Error) != tc.wantError {
				t.Errorf("span status %v, want error %v", span.Status, tc.wantError)
			}
			if tc.traceparent != "" {
				if span.SpanContext.TraceID().String() != clientTrace || span.Parent.SpanID().String() != clientSpan || !span.Parent.IsRemote() {
					t.Errorf("span %s parent %s, want a child of the client's %s/%s",
						span.SpanContext.TraceID(), span.Parent.SpanID(), clientTrace, clientSpan)
				}
			} else if span.Parent.IsValid() {
				t.Errorf("span has parent %v without a traceparent", span.Parent)
			}
			if tc.wantError {
				assertLoggedTraceID(t, logs.Bytes(), span.SpanContext.TraceID().String())
			}
		})
	}
}

// assertLoggedTraceID checks that the error handler's "request failed" line
// carries the request's trace_id.
func assertLoggedTraceID(t *testing.T, logs []byte, want string) {
	t.Helper()
	for line := range bytes.SplitSeq(bytes.TrimSpace(logs), []byte("\n")) {
		var rec struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
			TraceID   string `json:"trace_id"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "request failed" {
			if rec.TraceID != want || rec.RequestID == "" {
				t.Errorf("request failed logged trace_id %q request_id %q, want trace_id %q", rec.TraceID, rec.RequestID, want)
			}
			return
		}
	}
	t.Errorf("no request failed line in logs:\n%s", logs)
}

func TestNoSpansWithoutTracerProvider(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := New(Deps{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	s.e.GET("/boom", func(c echo.Context) error {
		if trace.SpanContextFromContext(c.Request().Context()).IsValid() {
			t.Error("request context carries a span with tracing off")
		}
		panic("boom")
	})
	req := httptest.NewRequest("GET", "/boom", nil)
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	s.ServeHTTP(httptest.NewRecorder(), req)
	if bytes.Contains(logs.Bytes(), []byte("trace_id")) {
		t.Errorf("trace_id logged with tracing off:\n%s", logs.Bytes())
	}
}
