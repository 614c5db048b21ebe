package memory

import (
	"fmt"
	"regexp"
)

// DefaultRedact are the patterns MEMORY_REDACT defaults to: API-key-like
// strings (OpenAI/Anthropic sk-…, AWS AKIA…, GitHub ghp_… and kin, Slack
// xox…), bearer tokens and PEM private-key blocks.
var DefaultRedact = []string{
	`-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----`,
	`\bsk-[A-Za-z0-9_\-]{16,}`,
	`\bAKIA[0-9A-Z]{16}\b`,
	`\bgh[pousr]_[A-Za-z0-9]{20,}`,
	`\bgithub_pat_[A-Za-z0-9_]{20,}`,
	`\bxox[abprs]-[A-Za-z0-9\-]{10,}`,
	`(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*`,
}

// redacted replaces every match.
const redacted = "[REDACTED]"

// Redactor removes secrets from text before it is stored or sent to a
// summariser. It is safe for concurrent use.
type Redactor struct{ res []*regexp.Regexp }

// NewRedactor compiles patterns (Go regexp syntax); an invalid one is an
// error naming it.
func NewRedactor(patterns []string) (*Redactor, error) {
	r := &Redactor{}
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("MEMORY_REDACT pattern %q: %w", p, err)
		}
		r.res = append(r.res, re)
	}
	return r, nil
}

// Redact returns s with every match of every pattern replaced by
// "[REDACTED]".
func (r *Redactor) Redact(s string) string {
	for _, re := range r.res {
		s = re.ReplaceAllLiteralString(s, redacted)
	}
	return s
}
