package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// The scanners below find keys in raw JSON without decoding it. They rely on
// one property of JSON: a '"' inside a string is always escaped, so an
// unescaped `"key"` followed by ':' is a real object key. They never panic
// on malformed or truncated input; they report "not found" instead.
//
// Two kinds of reader: eachMember with a keySet reads a client's request
// body, whose keys may be spelled in any way a parser accepts (escapes, other
// letter case), and compares them as parsers do. firstKey, lastKey and
// lastUsage search upstream responses for a key's plain spelling, which is
// how the JSON encoders of upstream APIs write keys; a substring search is
// what keeps them cheap on every SSE event.

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

// maxKeyLen bounds the unescaped length of a key that can match a keySet
// name: a name character is at most 3 bytes in any spelling that matches it
// (U+212A KELVIN SIGN for k).
const maxKeyLen = 64

// A keySet names the object keys a caller acts on, in a body whose keys may
// be written in any way a parser accepts. Keys are compared after
// unescaping, so "str\u0065am" is stream. They are also compared as Go's
// encoding/json matches struct fields, case-insensitively with Unicode
// folding ("Stream", or "\u017ftream" with a long s, is stream to an
// upstream written in Go while others see an unknown key): match reports
// such a key as an inexact match, for the caller to refuse.
type keySet struct {
	prefix string // where the object sits, for error messages: "" or "a.b."
	names  [][]byte
}

// newKeySet returns the keySet of names, which must be at most maxKeyLen/3
// bytes long, in an object at prefix.
func newKeySet(prefix string, names ...string) keySet {
	ks := keySet{prefix: prefix, names: make([][]byte, len(names))}
	for i, n := range names {
		if 3*len(n) > maxKeyLen {
			panic("keySet name too long: " + n)
		}
		ks.names[i] = []byte(n)
	}
	return ks
}

// path returns the name at index i with its prefix.
func (ks keySet) path(i int) string {
	return ks.prefix + string(ks.names[i])
}

// match returns the index of the name that the key raw (the bytes between
// its quotes) stands for, or -1, and whether raw names it exactly (after
// unescaping) rather than only case-insensitively.
func (ks keySet) match(raw []byte) (i int, exact bool) {
	key := raw
	if bytes.IndexByte(raw, '\\') >= 0 {
		var buf [maxKeyLen]byte
		var ok bool
		if key, ok = unescapeKey(&buf, raw); !ok {
			return -1, false
		}
	}
	for i, name := range ks.names {
		if string(key) == string(name) {
			return i, true
		}
	}
	for i, name := range ks.names {
		if len(key) < len(name) || len(key) > 3*len(name) {
			continue
		}
		// Most keys differ from every name in their first byte; an ASCII
		// first byte matches only if equal but for the case bit.
		if c := key[0]; c < utf8.RuneSelf && c|0x20 != name[0]|0x20 {
			continue
		}
		if bytes.EqualFold(key, name) {
			return i, false
		}
	}
	return -1, false
}

// unescapeKey decodes the escapes of the string content raw into buf as
// encoding/json does, as far as matching keySet names goes: surrogates and
// invalid UTF-8, which match no name, are not decoded faithfully. ok is
// false when raw holds a bad escape or decodes to more than maxKeyLen bytes,
// either way no keySet name.
func unescapeKey(buf *[maxKeyLen]byte, raw []byte) (key []byte, ok bool) {
	out := buf[:0]
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			if len(out) == cap(out) {
				return nil, false
			}
			out = append(out, c)
			continue
		}
		if i++; i >= len(raw) {
			return nil, false
		}
		switch raw[i] {
		case '"', '\\', '/':
			c = raw[i]
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'u':
			r := hex4(raw, i+1)
			if r < 0 {
				return nil, false
			}
			i += 4
			if 0xd800 <= r && r < 0xe000 {
				// A UTF-16 surrogate: the pair decodes to a rune past
				// U+FFFF, a lone one to U+FFFD, and neither folds to a
				// name's character; U+FFFD stands for both.
				r = utf8.RuneError
			}
			if len(out)+utf8.RuneLen(r) > cap(out) {
				return nil, false
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return nil, false
		}
		if len(out) == cap(out) {
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// hex4 decodes the four hex digits at b[i:], or returns -1.
func hex4(b []byte, i int) rune {
	if i+4 > len(b) {
		return -1
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// errNotObject: the bytes given are not a JSON object eachMember could walk.
var errNotObject = errors.New("not a JSON object")

// uniqueMember finds the member of the JSON object b named ks.names[k]: the
// bounds of its value and whether it is there. Like Inspect, it
// refuses a key that two parsers could read differently: err wraps
// ErrDuplicateKey when the name is there twice, ErrKeyCase when it is there
// only case-insensitively, and is errNotObject when b is not an object.
func uniqueMember(b []byte, ks keySet, k int) (start, end int, found bool, err error) {
	ok := eachMember(b, func(name []byte, vs, ve int) bool {
		i, exact := ks.match(name)
		switch {
		case i != k:
			return true
		case found:
			err = keyError(ErrDuplicateKey, ks.path(k))
		case !exact:
			err = keyError(ErrKeyCase, ks.path(k))
		}
		start, end, found = vs, ve, true
		return err == nil
	})
	if !ok {
		return 0, 0, false, errNotObject
	}
	if err != nil {
		return 0, 0, false, err
	}
	return start, end, found, nil
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

// firstKey returns where the value of the first real `"key":` in b starts,
// or -1. quoted is the key with its quotes.
func firstKey(b []byte, quoted string) int {
	for from := 0; from < len(b); {
		q := bytes.Index(b[from:], []byte(quoted))
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

// stringValue decodes the JSON string starting at b[v] as encoding/json
// does (invalid UTF-8 becomes U+FFFD), or returns "".
func stringValue(b []byte, v int) string {
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

// lastUsage finds the last real "usage" key in b whose value is an object
// with token counts and decodes it.
func lastUsage(b []byte) (u wireUsage, found bool) {
	const quoted = `"usage"`
	lastMatch(b, quoted, func(q int) bool {
		if v := keyValue(b, q, quoted); v >= 0 && b[v] == '{' {
			if ve := valueEnd(b, v); ve > 0 {
				u, found = decodeUsage(b[v:ve])
				found = found && u.any()
			}
		}
		return found
	})
	return u, found
}

// lastMatch calls try with the index of each occurrence of pat in b, the
// last one first, until try returns true, and reports whether one did. It
// finds them with bytes.Index, which is vectorised (bytes.LastIndex is a
// byte-at-a-time Rabin-Karp, a measurable cost on every SSE event).
func lastMatch(b []byte, pat string, try func(q int) bool) bool {
	var buf [8]int
	at := buf[:0]
	for from := 0; from < len(b); {
		q := bytes.Index(b[from:], []byte(pat))
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

// lastKey returns where the value of the last real `"key":` in b starts,
// or -1.
func lastKey(b []byte, quoted string) int {
	v := -1
	lastMatch(b, quoted, func(q int) bool {
		v = keyValue(b, q, quoted)
		return v >= 0
	})
	return v
}
