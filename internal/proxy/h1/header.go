package h1

// commonKeys interns the header names upstreams commonly send, so reading
// them allocates no key string.
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Alt-Svc", "Anthropic-Organization-Id",
		"Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset",
		"Anthropic-Ratelimit-Tokens-Limit", "Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset",
		"Apim-Request-Id", "Cache-Control", "Cf-Cache-Status", "Cf-Ray", "Connection", "Content-Encoding", "Content-Length",
		"Content-Type", "Date", "Keep-Alive", "Openai-Organization", "Openai-Processing-Ms", "Openai-Project", "Openai-Version",
		"Request-Id", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security", "Trailer", "Transfer-Encoding",
		"Vary", "Via", "X-Content-Type-Options", "X-Envoy-Upstream-Service-Time", "X-Ms-Region", "X-Ratelimit-Limit-Requests",
		"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Remaining-Tokens",
		"X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens", "X-Request-Id",
	} {
		m[k] = k
	}
	return m
}()

// canonicalKey returns the canonical form of the header name b (as
// textproto.CanonicalMIMEHeaderKey), rewriting b in place.
func canonicalKey(b []byte) string {
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	if k, ok := commonKeys[string(b)]; ok {
		return k
	}
	return string(b)
}
