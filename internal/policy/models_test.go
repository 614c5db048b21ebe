package policy_test

import (
	"testing"

	"github.com/llmproxy/llm-proxy/internal/policy"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, model string
		want           bool
	}{
		{"gpt-4o", "gpt-4o", true},
		{"gpt-4o", "gpt-4o-mini", false},
		{"gpt-4.1-*", "gpt-4.1-mini", true},
		{"gpt-4.1-*", "gpt-4.1", false},
		{"gpt-4.1*", "gpt-4.1", true},
		{"*", "anything/at:all", true},
		{"*-mini", "gpt-4o-mini", true},
		{"*-mini", "gpt-4o-mini-2024", false},
		{"claude-*-sonnet-*", "claude-3-5-sonnet-20241022", true},
		{"claude-*-sonnet-*", "claude-3-5-haiku-20241022", false},
		{"meta-llama/*", "meta-llama/Llama-3-70b", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"GPT-4o", "gpt-4o", false}, // byte for byte: upstreams treat case as significant
		{"", "", true},
		{"x", "", false},
	}
	for _, tt := range tests {
		if got := policy.Match(tt.pattern, tt.model); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.model, got, tt.want)
		}
	}
}

func TestModelAllowed(t *testing.T) {
	t.Parallel()
	project := []string{"gpt-4.1-*", "o3"}
	token := []string{"gpt-4.1-mini", "o3-pro"}
	tests := []struct {
		name           string
		project, token []string
		model          string
		want           bool
	}{
		{"no lists", nil, nil, "anything", true},
		{"project list allows", project, nil, "gpt-4.1-nano", true},
		{"project list refuses", project, nil, "gpt-4o", false},
		{"token list alone", nil, token, "gpt-4.1-mini", true},
		{"token narrows", project, token, "gpt-4.1-mini", true},
		{"token narrows out", project, token, "gpt-4.1-nano", false},
		{"token cannot widen", project, token, "o3-pro", false},
	}
	for _, tt := range tests {
		if got := policy.ModelAllowed(tt.project, tt.token, tt.model); got != tt.want {
			t.Errorf("%s: ModelAllowed(%q) = %v, want %v", tt.name, tt.model, got, tt.want)
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"*":                         "*",
		"https://app.example.com":   "https://app.example.com",
		"HTTPS://App.Example.COM":   "https://app.example.com",
		"http://localhost:5173":     "http://localhost:5173",
		"http://[::1]:8080":         "http://[::1]:8080",
		"https://xn--bcher-kva.com": "https://xn--bcher-kva.com",
	}
	for in, want := range good {
		got, err := policy.NormalizeOrigin(in)
		if err != nil || got != want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "null", "app.example.com", "https://", "https://app.example.com/",
		"https://app.example.com/x", "https://app.example.com?x", "https://app.example.com#x", "https://u:p@app.example.com",
		"ftp://app.example.com", "https://a.example:0", "https://a.example:65536", "https://a.example:", "http://[::1",
		"http://[::1]x", "https://*.example.com", "https://a b"} {
		if got, err := policy.NormalizeOrigin(in); err == nil {
			t.Errorf("NormalizeOrigin(%q) = %q, want an error", in, got)
		}
	}
}

func TestCheckPattern(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"gpt-4o", "*", "meta-llama/*", "claude-3-5-sonnet-*"} {
		if err := policy.CheckPattern(p); err != nil {
			t.Errorf("CheckPattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "gpt 4", "gpt\t4", "gpt-4\n", "modèle", string(make([]byte, 201))} {
		if err := policy.CheckPattern(p); err == nil {
			t.Errorf("CheckPattern(%q) = nil, want an error", p)
		}
	}
}
