package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// ErrPath is returned (wrapped) by CheckPath for a client path that is not
// canonical.
var ErrPath = errors.New("path not canonical")

// CheckPath reports whether a client path may be appended to a project's
// base path (SPEC §6.1): path is the decoded path and rawPath the client's
// encoding of it when that differs (url.URL's Path and RawPath). A path is
// canonical when it has no "." or ".." segment (raw or percent-encoded), no
// empty segment, no encoded "/" and no "\" in any form, and no control
// byte: an upstream or an intermediary that normalises such a path would
// serve something outside the project's base path, with the project's key.
// The error wraps ErrPath and names the problem, never the path.
func CheckPath(path, rawPath string) error {
	if path == "" || path[0] != '/' {
		return fmt.Errorf("%w: must start with /", ErrPath)
	}
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: control character", ErrPath)
		case c == '\\':
			return fmt.Errorf("%w: backslash", ErrPath)
		}
	}
	for seg := range strings.SplitSeq(path[1:], "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: empty segment", ErrPath)
		case ".", "..":
			return fmt.Errorf("%w: dot segment", ErrPath)
		}
	}
	// The decoded path hides an encoded slash: it splits differently.
	for i := 0; i+2 < len(rawPath); i++ {
		if rawPath[i] == '%' && rawPath[i+1] == '2' && (rawPath[i+2] == 'f' || rawPath[i+2] == 'F') {
			return fmt.Errorf("%w: encoded slash", ErrPath)
		}
	}
	return nil
}

// parseBase parses and checks a project's base URL.
func parseBase(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse base url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("parse base url: not an absolute http(s) URL")
	}
	return u, nil
}

// targetURL maps a client path under /v1 to the upstream URL under base
// (from parseBase, not modified). model names the Azure deployment.
func targetURL(base *url.URL, up Upstream, path, rawQuery, model string) *url.URL {
	u := *base
	root := strings.TrimRight(u.Path, "/")
	rest, underV1 := cutV1(path)
	u.RawPath, u.Fragment, u.RawFragment = "", "", ""

	if up.Provider != store.ProviderAzure {
		root = strings.TrimSuffix(root, "/v1")
		if underV1 {
			u.Path = root + "/v1" + rest
		} else {
			u.Path = root + path
		}
		u.RawQuery = rawQuery
		return &u
	}

	root = strings.TrimSuffix(root, "/openai")
	if deploymentScoped(rest) {
		prefix := root + "/openai/deployments/"
		u.Path = prefix + model + rest
		if esc := url.PathEscape(model); esc != model {
			u.RawPath = escapePath(prefix) + esc + escapePath(rest)
		}
	} else {
		u.Path = root + "/openai" + rest
	}
	q, _ := url.ParseQuery(rawQuery) // a malformed pair is dropped, the rest kept
	switch {
	case up.APIVersion != "":
		q.Set("api-version", up.APIVersion)
	case q.Get("api-version") == "":
		q.Set("api-version", DefaultAPIVersion)
	}
	u.RawQuery = q.Encode()
	return &u
}

// cutV1 returns path without its leading /v1 segment.
func cutV1(path string) (rest string, ok bool) {
	if path == "/v1" || strings.HasPrefix(path, "/v1/") {
		return path[len("/v1"):], true
	}
	return path, false
}

// deploymentScoped reports whether an Azure path (after /v1) lives under
// /openai/deployments/{model}.
func deploymentScoped(rest string) bool {
	switch strings.TrimSuffix(rest, "/") {
	case "/chat/completions", "/completions", "/embeddings":
		return true
	}
	return false
}

func escapePath(p string) string { return (&url.URL{Path: p}).EscapedPath() }

func isChatPath(path string) bool {
	return strings.TrimSuffix(path, "/") == "/v1/chat/completions"
}

// isHopHeader reports whether a canonical header name is hop-by-hop
// (RFC 9110 §7.6.1) or a proxy credential, never forwarded either way.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return strings.HasPrefix(k, "Proxy-")
}

// connectionTokens returns the canonical names listed in Connection, which
// are hop-by-hop too.
func connectionTokens(h http.Header) []string {
	var names []string
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				names = append(names, http.CanonicalHeaderKey(name))
			}
		}
	}
	return names
}

// upstreamHeader copies the client headers minus credentials, hop-by-hop
// headers and those the HTTP client writes itself, and adds the project's key. It
// shares value slices with in and never modifies in.
func upstreamHeader(in http.Header, up Upstream, requestID string) http.Header {
	listed := connectionTokens(in)
	out := make(http.Header, len(in)+3)
	for k, vv := range in {
		ck := http.CanonicalHeaderKey(k)
		if isHopHeader(ck) || slices.Contains(listed, ck) {
			continue
		}
		switch ck {
		case "Authorization", "X-Api-Key", "Api-Key", "Cookie",
			// The client writes these itself; without Accept-Encoding the
			// upstream answers uncompressed, so usage can be read.
			"Host", "Content-Length", "Accept-Encoding", "Expect", "X-Request-Id",
			// Billing is the project's choice, not the client's: on a
			// multi-organization key these pick who pays.
			"Openai-Organization", "Openai-Project",
			// The client's address stays here (SPEC §6.1).
			"Forwarded", "X-Real-Ip":
			continue
		}
		if strings.HasPrefix(ck, "X-Forwarded-") {
			continue
		}
		out[ck] = vv
	}
	switch up.Provider {
	case store.ProviderAnthropic:
		out.Set("X-Api-Key", up.APIKey)
		if out.Get("Anthropic-Version") == "" {
			out.Set("Anthropic-Version", anthropicVersion)
		}
	case store.ProviderAzure:
		out.Set("Api-Key", up.APIKey)
	default:
		out.Set("Authorization", "Bearer "+up.APIKey)
	}
	if requestID != "" {
		out.Set("X-Request-Id", requestID)
	}
	return out
}

// copyResponseHeader copies upstream response headers to dst, minus
// hop-by-hop headers and those about the upstream's own host (cookies,
// Alt-Svc). The upstream's request id is kept as X-Upstream-Request-Id.
func copyResponseHeader(dst, src http.Header) {
	listed := connectionTokens(src)
	for k, vv := range src {
		if isHopHeader(k) || slices.Contains(listed, k) {
			continue
		}
		switch k {
		case "Set-Cookie", "Alt-Svc":
			continue
		case "X-Request-Id":
			dst["X-Upstream-Request-Id"] = vv
			continue
		}
		dst[k] = vv
	}
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	const sse = "text/event-stream"
	return len(ct) >= len(sse) && strings.EqualFold(ct[:len(sse)], sse)
}

func isJSON(h http.Header) bool {
	return strings.Contains(strings.ToLower(h.Get("Content-Type")), "json")
}
