package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// TestModelAllowLists sends requests for allowed and refused models through
// OpenAI, Anthropic and Azure projects: refusals are 403 model_not_allowed
// and never reach the upstream.
func TestModelAllowLists(t *testing.T) {
	t.Parallel()
	e := newPolicyEnv(t)
	openai := e.project(manage.CreateProjectInput{Name: "openai", AllowedModels: []string{"gpt-4.1-*", "o3"}})
	anthropic := e.project(manage.CreateProjectInput{Name: "anthropic", Provider: store.ProviderAnthropic,
		AllowedModels: []string{"claude-*-haiku-*"}})
	azure := e.project(manage.CreateProjectInput{Name: "azure", Provider: store.ProviderAzure, AllowedModels: []string{"prod-gpt4o"}})
	open := e.project(manage.CreateProjectInput{Name: "open"})

	anyModel := e.token(openai)
	narrowed := e.token(openai, "gpt-4.1-mini")
	unrestricted := e.token(open)
	tokenOnly := e.token(open, "gpt-4o-*")
	claude := e.token(anthropic)
	az := e.token(azure)

	tests := []struct {
		name, secret, method, path, body string
		allowed                          bool
	}{
		{"project glob allows", anyModel, "POST", "/v1/chat/completions", chat("gpt-4.1-nano"), true},
		{"project exact allows", anyModel, "POST", "/v1/chat/completions", chat("o3"), true},
		{"project list refuses", anyModel, "POST", "/v1/chat/completions", chat("gpt-4o"), false},
		{"glob is not a prefix match", anyModel, "POST", "/v1/chat/completions", chat("o3-pro"), false},
		{"token narrows", narrowed, "POST", "/v1/chat/completions", chat("gpt-4.1-mini"), true},
		{"token narrows out", narrowed, "POST", "/v1/chat/completions", chat("gpt-4.1-nano"), false},
		{"responses endpoint", anyModel, "POST", "/v1/responses", `{"model":"gpt-4o","input":"hi"}`, false},
		{"escaped key still read", anyModel, "POST", "/v1/chat/completions", `{"mod\u0065l":"gpt-4o","messages":[]}`, false},
		{"no lists", unrestricted, "POST", "/v1/chat/completions", chat("anything"), true},
		{"token list alone", tokenOnly, "POST", "/v1/chat/completions", chat("gpt-4o-mini"), true},
		{"token list alone refuses", tokenOnly, "POST", "/v1/chat/completions", chat("o3"), false},
		{"retrieve a refused model", anyModel, "GET", "/v1/models/gpt-4o", "", false},
		{"retrieve an allowed model", anyModel, "GET", "/v1/models/o3", "", true},
		{"anthropic allows", claude, "POST", "/v1/messages", `{"model":"claude-3-5-haiku-latest","max_tokens":5,"messages":[]}`, true},
		{"anthropic refuses", claude, "POST", "/v1/messages", `{"model":"claude-opus-4-1","max_tokens":5,"messages":[]}`, false},
		{"azure body model allows", az, "POST", "/v1/chat/completions", chat("prod-gpt4o"), true},
		{"azure body model refuses", az, "POST", "/v1/chat/completions", chat("other-deployment"), false},
		{"azure deployment in the path refuses", az, "POST", "/v1/deployments/other-deployment/chat/completions", `{"messages":[]}`, false},
		{"azure openai/deployments path refuses", az, "POST", "/v1/openai/deployments/other-deployment/embeddings", `{"input":"x"}`, false},
		{"azure path allows", az, "POST", "/v1/deployments/prod-gpt4o/chat/completions", `{"messages":[]}`, true},
		{"azure path allowed, body refused", az, "POST", "/v1/deployments/prod-gpt4o/chat/completions", chat("other"), false},
	}
	for _, tt := range tests {
		w := e.do(tt.method, tt.path, tt.secret, tt.body)
		calls := e.upstreamCalls()
		if tt.allowed {
			if w.Code != http.StatusOK || len(calls) != 1 {
				t.Errorf("%s: status %d, %d upstream calls; want 200 and 1: %s", tt.name, w.Code, len(calls), w.Body)
			}
			continue
		}
		if w.Code != http.StatusForbidden || decodeError(t, w).Code != "model_not_allowed" || len(calls) != 0 {
			t.Errorf("%s: status %d, %d upstream calls; want 403 model_not_allowed and none: %s", tt.name, w.Code, len(calls), w.Body)
		}
	}
}

// TestModelListIsFiltered lists models with tokens of restricted and open
// projects, in the OpenAI and Anthropic shapes.
func TestModelListIsFiltered(t *testing.T) {
	t.Parallel()
	e := newPolicyEnv(t)
	const openaiList = `{"object":"list","data":[{"id":"gpt-4.1-mini","object":"model"},{"id":"gpt-4o","object":"model"},{"id":"o3","object":"model"}]}`
	const anthropicList = `{"data":[{"id":"claude-3-5-haiku-latest","type":"model"},{"id":"claude-opus-4-1","type":"model"}],"has_more":false,"first_id":"claude-3-5-haiku-latest","last_id":"claude-opus-4-1"}`
	restricted := e.project(manage.CreateProjectInput{Name: "restricted", AllowedModels: []string{"gpt-4.1-*", "o3"}})
	open := e.project(manage.CreateProjectInput{Name: "open"})
	anthropic := e.project(manage.CreateProjectInput{Name: "anthropic", Provider: store.ProviderAnthropic, AllowedModels: []string{"claude-*-haiku-*"}})

	ids := func(raw []byte) []string {
		var l struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			FirstID *string `json:"first_id"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("model list %s: %v", raw, err)
		}
		var out []string
		for _, m := range l.Data {
			out = append(out, m.ID)
		}
		return out
	}
	for _, tt := range []struct {
		name, secret, upstream string
		want                   []string
	}{
		{"project list", e.token(restricted), openaiList, []string{"gpt-4.1-mini", "o3"}},
		{"token narrows", e.token(restricted, "o3"), openaiList, []string{"o3"}},
		{"no lists: untouched", e.token(open), openaiList, []string{"gpt-4.1-mini", "gpt-4o", "o3"}},
		{"anthropic shape", e.token(anthropic), anthropicList, []string{"claude-3-5-haiku-latest"}},
	} {
		e.setAnswer(http.StatusOK, tt.upstream)
		w := e.do("GET", "/v1/models", tt.secret, "")
		if w.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tt.name, w.Code, w.Body)
		}
		if got := ids(w.Body.Bytes()); !slices.Equal(got, tt.want) {
			t.Errorf("%s: models %q, want %q", tt.name, got, tt.want)
		}
	}
	e.setAnswer(http.StatusOK, `{"data":[{"id":"claude-opus-4-1"}],"first_id":"claude-opus-4-1","last_id":"claude-opus-4-1","has_more":false}`)
	w := e.do("GET", "/v1/models", e.token(anthropic), "")
	var page map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &page)
	if page["first_id"] != nil || page["last_id"] != nil || page["has_more"] != false {
		t.Errorf("emptied Anthropic page = %s; want first_id and last_id null", w.Body)
	}

	e.setAnswer(http.StatusOK, `not json`)
	w = e.do("GET", "/v1/models", e.token(restricted), "")
	if w.Code != http.StatusBadGateway {
		t.Errorf("unreadable list for a restricted token: %d %s, want 502 (never unfiltered)", w.Code, w.Body)
	}
	e.setAnswer(http.StatusUnauthorized, `{"error":{"message":"bad key"}}`)
	w = e.do("GET", "/v1/models", e.token(restricted), "")
	if w.Code != http.StatusUnauthorized || !json.Valid(w.Body.Bytes()) {
		t.Errorf("upstream error: %d %s, want the 401 relayed", w.Code, w.Body)
	}
}
