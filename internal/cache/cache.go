// Package cache is the response cache (SPEC §6.7): answers to identical
// non-streaming requests of one project, kept in Redis when the deployment
// has one (shared by every replica) or in a bounded in-process LRU.
//
// The cache never fails a request: a store that cannot answer is a miss,
// and a write it cannot make is skipped.
package cache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"
)

// Entry is one stored answer. Entries returned by Get are shared: callers
// must not modify Header or Body.
type Entry struct {
	Status int
	// Header holds the response headers worth replaying (Content-Type),
	// never Set-Cookie.
	Header http.Header
	Body   []byte
	// Model is the model the answer named.
	Model string
	// PromptTokens, CompletionTokens and TotalTokens are the usage the
	// answer reported when it was stored.
	PromptTokens, CompletionTokens, TotalTokens int
	// Created is when the answer was stored, for the Age header and the
	// request's max-age.
	Created time.Time
}

// size is what an entry is charged against a byte budget: its body, header
// and key, plus a fixed allowance for the bookkeeping.
func (e *Entry) size(key string) int64 {
	n := int64(len(key) + len(e.Body) + len(e.Model) + entryOverhead)
	for k, vv := range e.Header {
		n += int64(len(k))
		for _, v := range vv {
			n += int64(len(v))
		}
	}
	return n
}

const entryOverhead = 128

// Cache stores entries under keys made by Key. Implementations are safe for
// concurrent use and never return an error: Get reports a miss when the
// store cannot answer, Set drops what it cannot store.
type Cache interface {
	// Get returns the fresh entry stored under key.
	Get(ctx context.Context, key string) (Entry, bool)
	// Set stores e under key for ttl (ttl <= 0 stores nothing).
	Set(ctx context.Context, key string, e Entry, ttl time.Duration)
}

// Request is what identifies an answer, besides the project.
type Request struct {
	ProjectID string
	// Path is the decoded endpoint path (/v1/chat/completions).
	Path     string
	RawQuery string
	Model    string
	// Header holds the client headers; the provider API-version and beta
	// headers (anthropic-version, anthropic-beta, openai-beta) are part of
	// the key, since they change the answer.
	Header http.Header
	// Body is the JSON request body.
	Body []byte
}

// keyHeaders are the request headers that select upstream behaviour.
var keyHeaders = []string{"Anthropic-Version", "Anthropic-Beta", "Openai-Beta"}

// ErrNotCanonical is returned by Key for a body that has no single
// reading: not JSON, not valid UTF-8, or an object naming a key twice.
var ErrNotCanonical = errors.New("body has no canonical JSON form")

// Key returns the cache key of r: the hex SHA-256 of the project, path,
// query, model, the keyed headers and the canonical body (object keys
// sorted, insignificant whitespace removed, numbers and strings as
// written). Bodies that differ only in key order or whitespace share a key;
// different projects never do. A body without one reading gives
// ErrNotCanonical: two upstream parsers could answer it differently, so it
// is not cached.
func Key(r Request) (string, error) {
	body, err := Canonical(r.Body)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, s := range []string{"llm-proxy cache v1", r.ProjectID, r.Path, r.RawQuery, r.Model} {
		writeField(h, s)
	}
	for _, k := range keyHeaders {
		for _, v := range r.Header[k] {
			writeField(h, k+":"+v)
		}
		writeField(h, "")
	}
	_, _ = h.Write(body)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeField writes s length-prefixed, so fields cannot run into each
// other.
func writeField(w io.Writer, s string) {
	var n [8]byte
	l := uint64(len(s))
	for i := range n {
		n[i] = byte(l >> (8 * i))
	}
	_, _ = w.Write(n[:])
	_, _ = io.WriteString(w, s)
}

// Canonical returns body as canonical JSON: object keys sorted, no
// insignificant whitespace, numbers as written, strings re-escaped. It
// returns ErrNotCanonical (wrapped) for invalid JSON or UTF-8, trailing
// data, or a key named twice in one object.
func Canonical(body []byte) ([]byte, error) {
	if !utf8.Valid(body) {
		return nil, errors.Join(ErrNotCanonical, errors.New("invalid UTF-8"))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var out bytes.Buffer
	out.Grow(len(body))
	if err := canonical(&out, dec); err != nil {
		return nil, errors.Join(ErrNotCanonical, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.Join(ErrNotCanonical, errors.New("data after the JSON value"))
	}
	return out.Bytes(), nil
}

var errDuplicate = errors.New("duplicate object key")

func canonical(out *bytes.Buffer, dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			out.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					out.WriteByte(',')
				}
				if err := canonical(out, dec); err != nil {
					return err
				}
			}
			out.WriteByte(']')
			_, err := dec.Token()
			return err
		}
		return canonicalObject(out, dec)
	case string:
		return writeJSON(out, v)
	case json.Number:
		out.WriteString(v.String())
	case bool:
		return writeJSON(out, v)
	case nil:
		out.WriteString("null")
	}
	return nil
}

func canonicalObject(out *bytes.Buffer, dec *json.Decoder) error {
	type member struct {
		key   string
		value []byte
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // the decoder allows only strings here
		var v bytes.Buffer
		if err := canonical(&v, dec); err != nil {
			return err
		}
		members = append(members, member{key, v.Bytes()})
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	slices.SortFunc(members, func(a, b member) int { return cmp.Compare(a.key, b.key) })
	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			if m.key == members[i-1].key {
				return errDuplicate
			}
			out.WriteByte(',')
		}
		if err := writeJSON(out, m.key); err != nil {
			return err
		}
		out.WriteByte(':')
		out.Write(m.value)
	}
	out.WriteByte('}')
	return nil
}

func writeJSON(out *bytes.Buffer, v any) error {
	b, err := json.Marshal(v)
	out.Write(b)
	return err
}
