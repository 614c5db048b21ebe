package memory

import (
	"errors"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Header limits: longer values are refused (400), never cut, so two
// different values can never map to one session or root.
const (
	maxSessionIDLen = 256
	maxRootLen      = 4096
)

// Errors from reading the memory headers; both are the client's fault.
var (
	ErrSessionID   = errors.New("X-Session-ID must be 1-256 printable characters")
	ErrProjectRoot = errors.New("X-Project-Root must be at most 4096 bytes of printable UTF-8")
)

// checkSessionID refuses session IDs that are too long or hold control
// characters or invalid UTF-8.
func checkSessionID(id string) error {
	if len(id) > maxSessionIDLen || !printable(id) {
		return ErrSessionID
	}
	return nil
}

// NormalizeRoot returns the canonical form of a project root, so that one
// directory gets one project ID however the client spells it: repeated
// slashes, "." segments, ".." segments and a trailing slash go (as
// path.Clean does); Windows separators become slashes. "" stays "" (no
// project). A root that is too long or holds control characters or
// invalid UTF-8 is ErrProjectRoot.
func NormalizeRoot(root string) (string, error) {
	if len(root) > maxRootLen || !printable(root) {
		return "", ErrProjectRoot
	}
	root = strings.TrimSpace(root)
	if root == "" {
		return "", nil
	}
	root = strings.ReplaceAll(root, `\`, "/")
	return path.Clean(root), nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}
