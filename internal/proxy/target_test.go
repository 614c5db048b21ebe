package proxy

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTargetURL(t *testing.T) {
	tests := []struct {
		name  string
		up    Upstream
		path  string
		query string
		model string
		want  string
	}{
		{"openai root with v1", Upstream{BaseURL: "https://api.openai.com/v1"}, "/v1/chat/completions", "", "", "https://api.openai.com/v1/chat/completions"},
		{"openai root without v1", Upstream{BaseURL: "https://api.openai.com"}, "/v1/chat/completions", "", "", "https://api.openai.com/v1/chat/completions"},
		{"trailing slash", Upstream{BaseURL: "https://api.openai.com/v1/"}, "/v1/models", "", "", "https://api.openai.com/v1/models"},
		{"root trailing slash", Upstream{BaseURL: "https://api.openai.com/"}, "/v1/models", "", "", "https://api.openai.com/v1/models"},
		{"query kept", Upstream{Provider: "openai", BaseURL: "http://127.0.0.1:9000/v1"}, "/v1/files", "purpose=batch&limit=2", "", "http://127.0.0.1:9000/v1/files?purpose=batch&limit=2"},
		{"compatible API under a prefix", Upstream{Provider: "openai", BaseURL: "https://gw.example.com/llm/v1"}, "/v1/embeddings", "", "", "https://gw.example.com/llm/v1/embeddings"},
		{"path with space escaped", Upstream{BaseURL: "https://api.openai.com/v1"}, "/v1/files/a b", "", "", "https://api.openai.com/v1/files/a%20b"},
		{"anthropic messages", Upstream{Provider: "anthropic", BaseURL: "https://api.anthropic.com"}, "/v1/messages", "", "", "https://api.anthropic.com/v1/messages"},
		{"anthropic with v1", Upstream{Provider: "anthropic", BaseURL: "https://api.anthropic.com/v1/"}, "/v1/messages/count_tokens", "", "", "https://api.anthropic.com/v1/messages/count_tokens"},
		{"azure chat", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com"}, "/v1/chat/completions", "", "gpt-4o", "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
		{"azure embeddings with version", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com/", APIVersion: "2025-01-01"}, "/v1/embeddings", "", "emb", "https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2025-01-01"},
		{"azure project version beats client's", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com", APIVersion: "2025-01-01"}, "/v1/chat/completions", "api-version=2023-05-15", "m", "https://res.openai.azure.com/openai/deployments/m/chat/completions?api-version=2025-01-01"},
		{"azure client version when project has none", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com"}, "/v1/chat/completions", "api-version=2023-05-15", "m", "https://res.openai.azure.com/openai/deployments/m/chat/completions?api-version=2023-05-15"},
		{"azure root with /openai", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com/openai/"}, "/v1/chat/completions", "", "m", "https://res.openai.azure.com/openai/deployments/m/chat/completions?api-version=2024-10-21"},
		{"azure other path", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com"}, "/v1/files", "purpose=batch", "", "https://res.openai.azure.com/openai/files?api-version=2024-10-21&purpose=batch"},
		{"azure model escaped", Upstream{Provider: "azure", BaseURL: "https://res.openai.azure.com"}, "/v1/chat/completions", "", "a/../b", "https://res.openai.azure.com/openai/deployments/a%2F..%2Fb/chat/completions?api-version=2024-10-21"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, err := parseBase(tt.up.BaseURL)
			if err != nil {
				t.Fatalf("parseBase: %v", err)
			}
			u := targetURL(base, tt.up, tt.path, tt.query, tt.model)
			if again := targetURL(base, tt.up, tt.path, tt.query, tt.model); again.String() != u.String() || base.String() != strings.TrimSpace(tt.up.BaseURL) {
				t.Errorf("targetURL modified its base: %s, then %s (base now %s)", u, again, base)
			}
			if got := u.String(); got != tt.want {
				t.Errorf("targetURL = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestTargetURLInvalidBase(t *testing.T) {
	for _, base := range []string{"", "api.openai.com/v1", "ftp://x/v1", "https://exa mple.com/%zz"} {
		if u, err := parseBase(base); err == nil {
			t.Errorf("parseBase(%q) = %s, want error", base, u)
		}
	}
}

func TestUpstreamHeader(t *testing.T) {
	client := http.Header{
		"Authorization":       {"Bearer sk-client"},
		"X-Api-Key":           {"sk-client"},
		"Api-Key":             {"sk-client"},
		"Cookie":              {"session=1"},
		"Proxy-Authorization": {"Basic abc"},
		"Proxy-Connection":    {"keep-alive"},
		"Connection":          {"keep-alive, X-Hop"},
		"X-Hop":               {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-T"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"Accept-Encoding":     {"br"},
		"Content-Length":      {"12"},
		"X-Request-Id":        {"client-chosen"},
		"Content-Type":        {"application/json"},
		"X-Custom":            {"a", "b"},
		"User-Agent":          {"openai-python/1.0"},
		"Traceparent":         {"00-abc-def-01"},
		"Openai-Organization": {"org-client-picked"},
		"Openai-Project":      {"proj-client-picked"},
		"X-Forwarded-For":     {"203.0.113.9"},
		"X-Forwarded-Host":    {"evil.example"},
		"X-Forwarded-Proto":   {"https"},
		"Forwarded":           {"for=203.0.113.9"},
		"X-Real-Ip":           {"203.0.113.9"},
	}
	pass := http.Header{
		"Content-Type": {"application/json"},
		"X-Custom":     {"a", "b"},
		"User-Agent":   {"openai-python/1.0"},
		"Traceparent":  {"00-abc-def-01"},
		"X-Request-Id": {"req-1"},
	}
	with := func(kv ...string) http.Header {
		h := pass.Clone()
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		up     Upstream
		client http.Header
		want   http.Header
	}{
		{"openai", Upstream{Provider: "openai", APIKey: "sk-project"}, client, with("Authorization", "Bearer sk-project")},
		{"compatible", Upstream{Provider: "vllm", APIKey: "sk-project"}, client, with("Authorization", "Bearer sk-project")},
		{"anthropic", Upstream{Provider: "anthropic", APIKey: "sk-project"}, client, with("X-Api-Key", "sk-project", "Anthropic-Version", "2023-06-01")},
		{"anthropic keeps client version", Upstream{Provider: "anthropic", APIKey: "sk-project"}, with("Anthropic-Version", "2024-01-01", "X-Api-Key", "sk-client"), with("X-Api-Key", "sk-project", "Anthropic-Version", "2024-01-01")},
		{"azure", Upstream{Provider: "azure", APIKey: "sk-project"}, client, with("Api-Key", "sk-project")},
		{"no user agent added", Upstream{APIKey: "k"}, http.Header{"authorization": {"Bearer x"}}, http.Header{"Authorization": {"Bearer k"}, "X-Request-Id": {"req-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.client.Clone()
			got := upstreamHeader(tt.client, tt.up, "req-1")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("upstream header (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, tt.client); diff != "" {
				t.Errorf("client header modified (-before +after):\n%s", diff)
			}
		})
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		name          string
		path, rawPath string
		ok            bool
	}{
		{"chat", "/v1/chat/completions", "", true},
		{"v1 only", "/v1", "", true},
		{"percent-encoded letters", "/v1/models/gpt 4", "/v1/models/gpt%204", true},
		{"dot dot", "/v1/../../tenant-b/x", "", false},
		{"dot", "/v1/./chat/completions", "", false},
		{"encoded dot dot", "/v1/../x", "/v1/%2e%2e/x", false},
		{"mixed encoded dot dot", "/v1/../x", "/v1/.%2E/x", false},
		{"encoded slash dot dot", "/v1/../x", "/v1/..%2fx", false},
		{"encoded slash", "/v1/a/b", "/v1/a%2Fb", false},
		{"double slash", "/v1//chat/completions", "", false},
		{"trailing slash", "/v1/chat/completions/", "", false},
		{"backslash", `/v1/..\x`, "", false},
		{"encoded backslash", `/v1/a\b`, "/v1/a%5Cb", false},
		{"NUL", "/v1/a\x00b", "/v1/a%00b", false},
		{"newline", "/v1/a\nb", "/v1/a%0Ab", false},
		{"DEL", "/v1/a\x7fb", "/v1/a%7Fb", false},
		{"relative", "v1/chat", "", false},
		{"dots inside a segment", "/v1/files/a..b", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPath(tt.path, tt.rawPath)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckPath(%q, %q) = %v, want ok=%v", tt.path, tt.rawPath, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrPath) {
				t.Fatalf("error %v does not wrap ErrPath", err)
			}
		})
	}
}

func TestCopyResponseHeader(t *testing.T) {
	src := http.Header{
		"Content-Type":         {"application/json"},
		"Connection":           {"close, X-Hop"},
		"X-Hop":                {"1"},
		"Keep-Alive":           {"timeout=5"},
		"Transfer-Encoding":    {"chunked"},
		"Set-Cookie":           {"__cf_bm=x"},
		"Alt-Svc":              {`h3=":443"`},
		"X-Request-Id":         {"upstream-id"},
		"Retry-After":          {"3"},
		"Openai-Processing-Ms": {"42"},
	}
	dst := http.Header{"X-Request-Id": {"ours"}}
	copyResponseHeader(dst, src)
	want := http.Header{
		"Content-Type":          {"application/json"},
		"X-Request-Id":          {"ours"},
		"X-Upstream-Request-Id": {"upstream-id"},
		"Retry-After":           {"3"},
		"Openai-Processing-Ms":  {"42"},
	}
	if diff := cmp.Diff(want, dst); diff != "" {
		t.Errorf("response header (-want +got):\n%s", diff)
	}
}

func TestBaseURLParsedOnce(t *testing.T) {
	f := New(Options{})
	t.Cleanup(f.Close)
	a, err := f.baseURL("https://api.example.com/v1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := f.baseURL("https://api.example.com/v1")
	c, _ := f.baseURL("https://other.example.com")
	if a != b || a == c || c.Host != "other.example.com" {
		t.Errorf("cache returned %p, %p, %p (%s)", a, b, c, c)
	}
	for range 2 {
		if _, err := f.baseURL("ftp://example.com"); err == nil {
			t.Error("an invalid base URL was accepted")
		}
	}
}
