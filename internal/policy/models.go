// Package policy holds the per-project policies of SPEC §6.7 that the
// request path checks before anything goes upstream: which browser origins
// a project serves (CORS) and which models its tokens may use.
package policy

import (
	"errors"
	"strings"
)

// Bounds of a model pattern.
const (
	maxPatternLen = 200
	// MaxListLen bounds the entries of an allow-list (origins or models).
	MaxListLen = 100
)

// CheckPattern reports whether p is a model pattern: 1 to 200 printable
// ASCII characters without spaces, where '*' stands for any run of
// characters (slashes included: "meta-llama/*") and everything else for
// itself.
func CheckPattern(p string) error {
	if p == "" || len(p) > maxPatternLen {
		return errors.New("must be 1 to 200 characters")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c > '~' {
			return errors.New("must be printable ASCII without spaces")
		}
	}
	return nil
}

// Match reports whether model matches pattern ('*' is any run of
// characters, compared byte for byte otherwise).
func Match(pattern, model string) bool {
	// Greedy matching with one backtrack point: the last '*' seen.
	star, resume := -1, 0
	p, m := 0, 0
	for m < len(model) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, resume = p, m
			p++
		case p < len(pattern) && pattern[p] == model[m]:
			p++
			m++
		case star >= 0:
			resume++
			p, m = star+1, resume
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchAny reports whether model matches one of patterns; an empty list
// allows every model.
func matchAny(patterns []string, model string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if Match(p, model) {
			return true
		}
	}
	return false
}

// ModelAllowed reports whether a token may use model: it must match the
// project's list and the token's list, each of which allows every model
// when empty. A token's list can therefore only narrow its project's.
func ModelAllowed(project, token []string, model string) bool {
	return matchAny(project, model) && matchAny(token, model)
}

// NormalizeOrigin checks that o is "*" or a browser origin —
// scheme://host[:port] with scheme http or https, no path, query, fragment
// or credentials — and returns it in the form browsers send (scheme and
// host lower case).
func NormalizeOrigin(o string) (string, error) {
	if o == "*" {
		return o, nil
	}
	scheme, rest, ok := strings.Cut(o, "://")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != "http" && scheme != "https") {
		return "", errors.New(`must be "*" or an origin such as https://app.example.com (http or https)`)
	}
	if rest == "" || len(o) > 255 {
		return "", errors.New("must name a host (at most 255 characters in all)")
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']'
		if !ok {
			return "", errors.New("must be scheme://host[:port] without path, query, fragment or credentials")
		}
	}
	host, port, hasPort := strings.Cut(rest, ":")
	if strings.HasPrefix(rest, "[") { // IPv6 literal
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", errors.New("has an unterminated IPv6 literal")
		}
		host, port = rest[:end+1], strings.TrimPrefix(rest[end+1:], ":")
		hasPort = len(rest) > end+1
		if hasPort && rest[end+1] != ':' {
			return "", errors.New("must be scheme://host[:port]")
		}
	}
	if host == "" {
		return "", errors.New("must name a host")
	}
	if hasPort && !validPort(port) {
		return "", errors.New("has an invalid port")
	}
	return scheme + "://" + strings.ToLower(rest), nil
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n > 0 && n <= 65535
}
