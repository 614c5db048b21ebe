package proxy

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/llmproxy/llm-proxy/internal/store"
)

const tracerName = "github.com/llmproxy/llm-proxy/internal/proxy"

// Attributes of the upstream client span: OpenTelemetry GenAI and HTTP
// semantic conventions (gen_ai.system beside its successor
// gen_ai.provider.name, which backends do not all read yet). Prompt and
// completion text and the API key are never recorded.
const (
	attrOperation     = attribute.Key("gen_ai.operation.name")
	attrSystem        = attribute.Key("gen_ai.system")
	attrProvider      = attribute.Key("gen_ai.provider.name")
	attrRequestModel  = attribute.Key("gen_ai.request.model")
	attrStream        = attribute.Key("gen_ai.request.stream")
	attrResponseModel = attribute.Key("gen_ai.response.model")
	attrInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
	attrMethod        = attribute.Key("http.request.method")
	attrStatus        = attribute.Key("http.response.status_code")
	attrServerAddress = attribute.Key("server.address")
	attrServerPort    = attribute.Key("server.port")
	attrErrorType     = attribute.Key("error.type")
)

// maxModelInName bounds the client-chosen model name in span names.
const maxModelInName = 64

// startSpan starts the client span of one upstream call, named
// "{operation} {model}" for GenAI endpoints and "{method} upstream" for
// others (never the raw path, which can hold IDs).
func (f *Forwarder) startSpan(ctx context.Context, req *Request, info Info, up Upstream) (context.Context, trace.Span) {
	op := operation(req.Method, req.Path)
	name := req.Method + " upstream"
	if op != "" {
		name = op
		if info.Model != "" {
			name += " " + info.Model[:min(len(info.Model), maxModelInName)]
		}
	}
	system, provider := genAISystem(up.Provider)
	attrs := []attribute.KeyValue{
		attrSystem.String(system),
		attrProvider.String(provider),
		attrMethod.String(req.Method),
	}
	if op != "" {
		attrs = append(attrs, attrOperation.String(op), attrStream.Bool(info.Stream))
	}
	if info.Model != "" {
		attrs = append(attrs, attrRequestModel.String(info.Model))
	}
	return f.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// traceRequest names the upstream server u on the span in ctx and puts its
// W3C trace context in h, replacing any the client sent.
func traceRequest(ctx context.Context, u *url.URL, h http.Header) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{attrServerAddress.String(u.Hostname())}
		port := u.Port()
		if port == "" {
			port = "80"
			if u.Scheme == "https" {
				port = "443"
			}
		}
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attrServerPort.Int(n))
		}
		span.SetAttributes(attrs...)
	}
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
}

// endSpan records the outcome of the call and ends the span: token usage
// when the upstream reported (or the stream implied) any; 5xx answers and
// failures (502/504/499) mark it as an error.
func endSpan(span trace.Span, res *Result) {
	if span.IsRecording() {
		attrs := []attribute.KeyValue{attrStatus.Int(res.Status)}
		if res.Model != "" {
			attrs = append(attrs, attrResponseModel.String(res.Model))
		}
		if res.Status >= 200 && res.Status < 300 && res.Usage.TotalTokens > 0 {
			attrs = append(attrs, attrInputTokens.Int(res.Usage.PromptTokens), attrOutputTokens.Int(res.Usage.CompletionTokens))
		}
		switch e, _ := res.Err.(*Error); {
		case e != nil:
			attrs = append(attrs, attrErrorType.String(e.Msg))
			span.SetStatus(codes.Error, e.Msg)
		case res.Status >= 500:
			attrs = append(attrs, attrErrorType.String(strconv.Itoa(res.Status)))
			span.SetStatus(codes.Error, "")
		}
		span.SetAttributes(attrs...)
	}
	span.End()
}

// operation is the GenAI operation of a client request, "" for endpoints
// that are not one (model lists, files).
func operation(method, path string) string {
	if method != http.MethodPost {
		return ""
	}
	rest, _ := cutV1(path)
	switch rest {
	case "/chat/completions", "/messages", "/responses":
		return "chat"
	case "/completions":
		return "text_completion"
	case "/embeddings":
		return "embeddings"
	}
	return ""
}

// genAISystem maps a project provider to gen_ai.system and
// gen_ai.provider.name; unknown providers speak the OpenAI API.
func genAISystem(provider string) (system, providerName string) {
	switch provider {
	case store.ProviderAnthropic:
		return "anthropic", "anthropic"
	case store.ProviderAzure:
		return "az.ai.openai", "azure.ai.openai"
	default:
		return "openai", "openai"
	}
}
