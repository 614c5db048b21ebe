package manage

import (
	"unicode"
	"unicode/utf8"
)

// checkText refuses operator-chosen text (names, labels) that would read
// differently to the next reader: bytes that are not UTF-8, control
// characters (C0 including NUL, tab and newlines, DEL, C1), the Unicode line
// and paragraph separators, and the bidirectional overrides, embeddings and
// isolates (U+202A–U+202E, U+2066–U+2069) that make a console, a log line
// or a terminal show the text in another order than it is stored. It runs on
// the raw input, before trimming, so that a trailing newline is refused
// rather than silently dropped.
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	for i, r := range s {
		if disallowedRune(r) {
			return invalid(field, "must not contain control or bidirectional formatting characters (U+%04X at byte %d)", r, i)
		}
	}
	return nil
}

func disallowedRune(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL, C1
		return true
	case r == '\u2028', r == '\u2029': // line and paragraph separators
		return true
	case r >= '\u202A' && r <= '\u202E': // LRE, RLE, PDF, LRO, RLO
		return true
	case r >= '\u2066' && r <= '\u2069': // LRI, RLI, FSI, PDI
		return true
	}
	return false
}
