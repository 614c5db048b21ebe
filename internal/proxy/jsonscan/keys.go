package jsonscan

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

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
