// Package jsonscan reads the few fields the proxy acts on from JSON without
// decoding the rest. ReadRequest reads a client's request body (model,
// stream, stream_options, token limits) with keys compared as upstream
// parsers compare them, and refuses keys two parsers could read
// differently; WithIncludeUsage edits such a body to ask for the final
// usage chunk of a stream. FirstKey, LastKey, String and LastUsage find the
// model and the token usage in upstream responses and SSE events.
//
// The scanners rely on one property of JSON: a '"' inside a string is
// always escaped, so an unescaped `"key"` followed by ':' is a real object
// key. They never panic on malformed or truncated input; they report "not
// found" instead. All functions are safe for concurrent use.
//
// Request keys are compared as parsers compare them: a client may spell a
// key with escapes or in another letter case. Response keys are searched
// for as upstream encoders write them, plainly, with a substring search
// that stays cheap on every SSE event.
package jsonscan

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// skipWS returns the index of the first non-whitespace byte at or after i
// (len(b) when there is none).
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string starting at b[i] == '"',
// or -1 when it is not terminated.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the JSON value starting at b[i], or
// -1 when it is truncated or malformed.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
		j++
	}
	return j
}

// eachMember calls fn with the name and the value bounds of every member
// of the JSON object b, in order, until fn returns false. It reports whether
// b is an object whose members it could walk (it does not validate the
// values themselves: callers that need that check json.Valid first).
func eachMember(b []byte, fn func(name []byte, start, end int) bool) bool {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return true
	}
	for i < len(b) && b[i] == '"' {
		ke := stringEnd(b, i)
		if ke < 0 {
			return false
		}
		name := b[i+1 : ke-1]
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		vs := skipWS(b, i+1)
		ve := valueEnd(b, vs)
		if ve < 0 {
			return false
		}
		if !fn(name, vs, ve) {
			return true
		}
		i = skipWS(b, ve)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return true
		}
		if b[i] != ',' {
			return false
		}
		i = skipWS(b, i+1)
	}
	return false
}

// keyValue reports whether b[q:] begins a real `"key":` token, q being the
// index of a match of quoted ("\"key\""), and returns where its value
// starts, or -1.
func keyValue(b []byte, q int, quoted string) int {
	backslashes := 0
	for j := q - 1; j >= 0 && b[j] == '\\'; j-- {
		backslashes++
	}
	if backslashes%2 == 1 {
		return -1
	}
	i := skipWS(b, q+len(quoted))
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	i = skipWS(b, i+1)
	if i >= len(b) {
		return -1
	}
	return i
}

// FirstKey returns where the value of the first `"key":` in b starts, or
// -1; quoted is the key with its quotes (`"model"`), so callers pass a
// constant and a search allocates nothing (it runs on every SSE event). It
// searches for the key spelled as upstream encoders write it, without
// escapes. A `"key":` inside a string does not count; one inside a nested
// object does.
func FirstKey(b []byte, quoted string) int {
	for from := 0; from < len(b); {
		q := IndexQuoted(b[from:], quoted)
		if q < 0 {
			return -1
		}
		q += from
		if v := keyValue(b, q, quoted); v >= 0 {
			return v
		}
		from = q + 1
	}
	return -1
}

// String decodes the JSON string starting at b[v] as encoding/json does
// (invalid UTF-8 becomes U+FFFD); it returns "" when v is out of range or
// no complete string starts there.
func String(b []byte, v int) string {
	if v < 0 || v >= len(b) || b[v] != '"' {
		return ""
	}
	e := stringEnd(b, v)
	if e < 0 {
		return ""
	}
	raw := b[v+1 : e-1]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw)
	}
	var s string
	if json.Unmarshal(b[v:e], &s) != nil {
		return ""
	}
	return s
}

// lastMatch calls try with the index of each occurrence of pat in b, the
// last one first, until try returns true, and reports whether one did. It
// finds them with IndexQuoted, forwards (bytes.LastIndex is a byte-at-a-time
// Rabin-Karp, a measurable cost on every SSE event).
func lastMatch(b []byte, pat string, try func(q int) bool) bool {
	var buf [8]int
	at := buf[:0]
	for from := 0; from < len(b); {
		q := IndexQuoted(b[from:], pat)
		if q < 0 {
			break
		}
		at = append(at, from+q)
		from += q + 1
	}
	for i := len(at) - 1; i >= 0; i-- {
		if try(at[i]) {
			return true
		}
	}
	return false
}

// IndexQuoted returns the index of the first quoted (a string with its
// quotes, such as `"usage"`) in b, or -1. It is bytes.Index for that case,
// searching for the text after the opening quote and checking the quote
// before it: a '"' starts every JSON string, so a search anchored on it
// stops at every token, while the first letter of a key is far rarer (on
// SSE chunks this makes the search several times faster).
func IndexQuoted(b []byte, quoted string) int {
	if len(quoted) < 2 || quoted[0] != '"' {
		return bytes.Index(b, []byte(quoted))
	}
	rest := quoted[1:]
	for from := 1; from < len(b); {
		i := bytes.Index(b[from:], []byte(rest))
		if i < 0 {
			return -1
		}
		i += from
		if b[i-1] == '"' {
			return i - 1
		}
		from = i + 1
	}
	return -1
}

// LastKey is like FirstKey for the last `"key":` in b.
func LastKey(b []byte, quoted string) int {
	v := -1
	lastMatch(b, quoted, func(q int) bool {
		v = keyValue(b, q, quoted)
		return v >= 0
	})
	return v
}
