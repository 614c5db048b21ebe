package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TracingEnabled reports whether the standard OpenTelemetry variables, read
// through getenv, ask for traces to be exported: an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and
// neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none turns it off.
func TracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") ||
		strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// SetupTracing builds the trace pipeline the standard OpenTelemetry
// variables describe (SPEC §8): an OTLP exporter over HTTP
// (OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf, the default, or http/json) or
// gRPC (grpc), batched; the sampler of OTEL_TRACES_SAMPLER(_ARG); the
// resource of OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, with
// serviceName when OTEL_SERVICE_NAME is unset. The exporters and the SDK read
// their other OTEL_* settings (headers, TLS, timeouts, batching) themselves.
//
// When TracingEnabled(getenv) is false it builds nothing and returns a nil
// provider: callers then leave tracing out of the request path entirely.
// Otherwise the caller installs tp where it is needed (the OTel global, set
// once in main, and the components' options) and calls shutdown, which
// flushes pending spans, before exiting. shutdown is never nil.
func SetupTracing(ctx context.Context, serviceName string, getenv func(string) string, logger *slog.Logger) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if !TracingEnabled(getenv) {
		return nil, noop, nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	variable := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, variable = getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	var exp sdktrace.SpanExporter
	switch protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf", "http/json":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, noop, fmt.Errorf("%s: unsupported protocol %q (want http/protobuf, http/json or grpc)", variable, protocol)
	}
	if err != nil {
		return nil, noop, fmt.Errorf("create otlp trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, noop, errors.Join(fmt.Errorf("trace resource: %w", err), exp.Shutdown(ctx))
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	if protocol == "" {
		protocol = "http/protobuf"
	}
	logger.Info("tracing enabled", "protocol", protocol,
		"service_name", serviceNameOf(res, serviceName), "sampler", sdkSampler(getenv))
	return sdk, sdk.Shutdown, nil
}

// Propagator is the W3C Trace Context and Baggage propagator the proxy
// accepts from clients and installs as the OTel global.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// TraceID returns the hex trace id of the span in ctx, "" when there is
// none, for the trace_id log attribute.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

func serviceNameOf(res *resource.Resource, fallback string) string {
	if v, ok := res.Set().Value("service.name"); ok {
		return v.AsString()
	}
	return fallback
}

func sdkSampler(getenv func(string) string) string {
	if s := getenv("OTEL_TRACES_SAMPLER"); s != "" {
		return s
	}
	return "parentbased_always_on"
}
