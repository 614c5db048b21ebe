package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/policy"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Model allow-lists (SPEC §6.7): a request naming a model its token may not
// use is refused before it spends a rate limit or reaches the upstream, and
// the model list is filtered to what the token may use.

// restricted reports whether p's project or token limits the models.
func restricted(p *auth.Principal) bool {
	return len(p.Project.AllowedModels) > 0 || len(p.Token.AllowedModels) > 0
}

// checkModels refuses a request whose body model, Azure deployment (in the
// path) or retrieved model (/v1/models/{id}) p may not use.
func checkModels(p *auth.Principal, path, bodyModel string) error {
	if !restricted(p) {
		return nil
	}
	if bodyModel != "" && !policy.ModelAllowed(p.Project.AllowedModels, p.Token.AllowedModels, bodyModel) {
		return modelNotAllowed()
	}
	if m := pathModel(p.Project.Provider, path); m != "" && !policy.ModelAllowed(p.Project.AllowedModels, p.Token.AllowedModels, m) {
		return modelNotAllowed()
	}
	return nil
}

func modelNotAllowed() error {
	return &Error{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "model_not_allowed", Param: "model",
		Message: "this token may not use the requested model"}
}

// pathModel returns the model a (canonical, decoded) client path names:
// the id of /v1/models/{id}, and for Azure the deployment of
// /v1/deployments/{name}/... or /v1/openai/deployments/{name}/..., which
// the upstream serves whatever the body says; "" when it names none.
func pathModel(provider, path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return ""
	}
	if id, ok := strings.CutPrefix(rest, "models/"); ok {
		return id
	}
	if provider != store.ProviderAzure {
		return ""
	}
	rest = strings.TrimPrefix(rest, "openai/")
	if name, ok := strings.CutPrefix(rest, "deployments/"); ok {
		name, _, _ = strings.Cut(name, "/")
		return name
	}
	return ""
}

// isModelList reports whether a request lists the upstream's models.
func isModelList(method, path string) bool {
	return method == http.MethodGet && strings.TrimSuffix(path, "/") == "/v1/models"
}

// maxModelList bounds a buffered model list answer.
const maxModelList = 8 << 20

var errModelListTooLarge = errors.New("model list answer too large")

// bufferedResponse holds an answer whose body is rewritten before the client
// sees it.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newBufferedResponse() *bufferedResponse { return &bufferedResponse{header: make(http.Header)} }

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if b.body.Len()+len(p) > maxModelList {
		return 0, errModelListTooLarge
	}
	return b.body.Write(p)
}

// relayModels writes the buffered model list answer to w with only the
// models p may use, and reports whether it wrote. A 200 answer that is not
// a JSON object with a "data" array of objects with an "id" (or is over
// maxModelList) becomes a 502 in res: it cannot be filtered. Other answers
// are relayed as they came (error bodies name no models). When forwarding
// failed, nothing reached the client and res.Err gets a clean answer.
func relayModels(w http.ResponseWriter, b *bufferedResponse, p *auth.Principal, res *proxy.Result) (wrote bool) {
	unreadable := &Error{Status: http.StatusBadGateway, Type: "api_error", Code: "bad_upstream_response",
		Message: "the upstream's model list could not be read, so it cannot be filtered for this token"}
	if errors.Is(res.Err, errModelListTooLarge) {
		res.Status, res.Err = unreadable.Status, unreadable
	}
	if res.Err != nil {
		return false
	}
	body := b.body.Bytes()
	if b.status == http.StatusOK {
		filtered, ok := filterModels(body, p)
		if !ok {
			res.Status, res.Err = unreadable.Status, unreadable
			return false
		}
		body = filtered
	}
	h := w.Header()
	for k, v := range b.header {
		h[k] = v
	}
	h.Del("Content-Length")
	w.WriteHeader(b.status)
	_, _ = w.Write(body) // a client gone now has nothing left to be told
	return true
}

// filterModels keeps the entries of body's "data" array whose "id" p may
// use, and renews first_id and last_id (Anthropic's paging) when present.
func filterModels(body []byte, p *auth.Principal) ([]byte, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, false
	}
	var data []json.RawMessage
	if err := json.Unmarshal(obj["data"], &data); err != nil {
		return nil, false
	}
	kept := make([]json.RawMessage, 0, len(data))
	var first, last string
	for _, m := range data {
		var entry struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m, &entry); err != nil {
			return nil, false
		}
		if !policy.ModelAllowed(p.Project.AllowedModels, p.Token.AllowedModels, entry.ID) {
			continue
		}
		if first == "" {
			first = entry.ID
		}
		last = entry.ID
		kept = append(kept, m)
	}
	var err error
	if obj["data"], err = json.Marshal(kept); err != nil {
		return nil, false
	}
	for key, id := range map[string]string{"first_id": first, "last_id": last} {
		if _, ok := obj[key]; ok {
			obj[key], _ = json.Marshal(nullable(id))
		}
	}
	out, err := json.Marshal(obj)
	return out, err == nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
