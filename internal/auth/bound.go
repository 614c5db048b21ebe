package auth

import (
	"unicode"
	"unicode/utf8"
)

// Bounds of audited strings (SPEC §6.1): every client-supplied string that
// reaches the audit trail goes through Bound with one of these.
const (
	MaxAuditPath   = 512
	MaxAuditReason = 256
)

// Bound returns s cut to at most n bytes of valid UTF-8, cut at a character
// boundary. Invalid bytes and control, format and line-separator
// characters (which could forge log lines or reorder text on a console)
// become U+FFFD. Its work is bounded by n, not by len(s), so a megabyte
// path costs no more than a short one. A clean s within n is returned
// without copying.
func Bound(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n && printableASCII(s) {
		return s
	}
	out := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 || unsafeRune(r) {
			r = utf8.RuneError
		}
		if len(out)+utf8.RuneLen(r) > n {
			break
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// unsafeRune reports whether r is a control character (C0, DEL, C1), a
// format character (bidi overrides, zero-width characters) or a line or
// paragraph separator.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}
