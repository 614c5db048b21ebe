package proxy

import "github.com/llmproxy/llm-proxy/internal/store"

// Providers are the upstream APIs a project may name (store.Project's
// Provider), in the order error messages list them. What sets them apart
// lives in this package and nowhere else: their default API roots here,
// how each takes its key and lays out its URLs in target.go.
var Providers = []string{store.ProviderOpenAI, store.ProviderAnthropic, store.ProviderAzure}

// DefaultAPIVersion is the Azure api-version used when Upstream.APIVersion
// is empty and the client sent none; a new Azure project stores it.
const DefaultAPIVersion = "2024-10-21"

// anthropicVersion is the anthropic-version header sent when the client
// sent none.
const anthropicVersion = "2023-06-01"

// DefaultBaseURL returns provider's API root as its SDK takes it, or ""
// when it has none shared by every customer (Azure: one per resource) or
// is unknown.
func DefaultBaseURL(provider string) string {
	switch provider {
	case store.ProviderOpenAI:
		return "https://api.openai.com/v1"
	case store.ProviderAnthropic:
		return "https://api.anthropic.com"
	}
	return ""
}
