package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func TestTracingEnabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"service name alone", map[string]string{"OTEL_SERVICE_NAME": "proxy"}, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, false},
		{"sdk disabled false", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, true},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TracingEnabled(mapEnv(tc.env)); got != tc.want {
				t.Errorf("TracingEnabled = %v, want %v", got, tc.want)
			}
		})
	}
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestSetupTracingOffBuildsNothing(t *testing.T) {
	tp, shutdown, err := SetupTracing(context.Background(), "llm-proxy", mapEnv(nil), slog.New(slog.DiscardHandler))
	if err != nil || tp != nil || shutdown == nil {
		t.Fatalf("SetupTracing = %v, shutdown nil %v, %v; want nil provider and a no-op shutdown", tp, shutdown == nil, err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestSetupTracingRejectsUnknownProtocol(t *testing.T) {
	env := mapEnv(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})
	_, _, err := SetupTracing(context.Background(), "llm-proxy", env, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("err = %v, want one naming OTEL_EXPORTER_OTLP_PROTOCOL", err)
	}
}

// received collects the export requests a test receiver got.
type received chan *collectortrace.ExportTraceServiceRequest

func httpReceiver(t *testing.T) (string, received) {
	t.Helper()
	got := make(received, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		req := new(collectortrace.ExportTraceServiceRequest)
		if err == nil {
			err = proto.Unmarshal(body, req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- req
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

type grpcCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	got received
}

func (c *grpcCollector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.got <- req
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func grpcReceiver(t *testing.T) (string, received) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &grpcCollector{got: make(received, 16)}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return "http://" + ln.Addr().String(), c.got
}

func TestSetupTracingExportsOTLP(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		receiver func(*testing.T) (string, received)
	}{
		{"", httpReceiver},
		{"http/protobuf", httpReceiver},
		{"grpc", grpcReceiver},
	} {
		t.Run("protocol="+tc.protocol, func(t *testing.T) {
			endpoint, got := tc.receiver(t)
			// The SDK's exporters read the process environment themselves.
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_SERVICE_NAME", "")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")

			ctx := context.Background()
			tp, shutdown, err := SetupTracing(ctx, "llm-proxy", os.Getenv, slog.New(slog.DiscardHandler))
			if err != nil || tp == nil {
				t.Fatalf("SetupTracing = %v, %v", tp, err)
			}
			_, span := tp.Tracer("test").Start(ctx, "one span")
			span.End()
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := shutdown(sctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}

			select {
			case req := <-got:
				rs := req.GetResourceSpans()
				if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || rs[0].GetScopeSpans()[0].GetSpans()[0].GetName() != "one span" {
					t.Fatalf("export = %v", req)
				}
				attrs := map[string]string{}
				for _, kv := range rs[0].GetResource().GetAttributes() {
					attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				if attrs["service.name"] != "llm-proxy" || attrs["deployment.environment.name"] != "test" {
					t.Errorf("resource attributes = %v", attrs)
				}
			default:
				t.Fatal("the receiver got no export after shutdown flushed")
			}
		})
	}
}

func TestSetupTracingServiceNameFromEnv(t *testing.T) {
	endpoint, got := httpReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_SERVICE_NAME", "gateway-eu")
	ctx := context.Background()
	tp, shutdown, err := SetupTracing(ctx, "llm-proxy", os.Getenv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(ctx, "one span")
	span.End()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-got:
		var name string
		for _, kv := range req.GetResourceSpans()[0].GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				name = kv.GetValue().GetStringValue()
			}
		}
		if name != "gateway-eu" {
			t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's gateway-eu", name)
		}
	default:
		t.Fatal("the receiver got no export after shutdown flushed")
	}
}
