package jsonscan

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrInvalid is returned (wrapped) by ReadRequest for a body that is not a
// valid JSON object.
var ErrInvalid = errors.New("invalid JSON body")

// ErrDuplicateKey is returned (wrapped) by ReadRequest for a body that names
// a field the proxy acts on twice: upstreams disagree on which copy wins.
// The message names the field as the proxy spells it, never the body's
// bytes.
var ErrDuplicateKey = errors.New("duplicate key")

// ErrKeyCase is returned (wrapped) by ReadRequest for a body that names a
// field the proxy acts on in another letter case ("Stream"): an upstream
// decoding with Go's encoding/json takes it for the field, others ignore
// it. The message names the field as the proxy spells it.
var ErrKeyCase = errors.New("key differs from a known field only in letter case")

// keyError wraps the sentinel err with the path of the field it is about.
func keyError(err error, path string) error {
	return fmt.Errorf("%w: %q", err, path)
}

// Request is what the proxy reads from a request body.
type Request struct {
	Model string
	// Stream is the body's "stream" flag.
	Stream bool
	// IncludeUsage is true when stream_options.include_usage is already true.
	IncludeUsage bool
	// MaxTokens is max_completion_tokens, else max_tokens, else
	// max_output_tokens; 0 when absent.
	MaxTokens int
}

// The members of a request body the proxy acts on, in the order of
// requestKeys.
const (
	keyModel = iota
	keyStream
	keyStreamOptions
	keyMaxCompletionTokens
	keyMaxTokens
	keyMaxOutputTokens
	keyMessages
)

var (
	requestKeys = newKeySet("", "model", "stream", "stream_options", "max_completion_tokens", "max_tokens",
		"max_output_tokens", "messages")
	streamOptionKeys = newKeySet("stream_options.", "include_usage")
)

// ReadRequest scans a JSON request body for the fields in Request without
// decoding the rest (messages, tools...), reading keys the way upstream
// parsers do (escaped or not). A body that is not a JSON object gives an
// error wrapping ErrInvalid. A body that names model, stream,
// stream_options, max_tokens, max_completion_tokens, max_output_tokens,
// messages or stream_options.include_usage twice gives an error wrapping
// ErrDuplicateKey, and one that names them in another letter case an error
// wrapping ErrKeyCase. No error message holds body content. Fields of an
// unexpected type are ignored: judging the request is the upstream's job,
// the proxy only needs its estimates.
func ReadRequest(body []byte) (Request, error) {
	if !valid(body) {
		return Request{}, fmt.Errorf("%w: not valid JSON", ErrInvalid)
	}
	var req Request
	// max_completion_tokens, max_tokens, max_output_tokens; -1 when absent.
	maxTokens := [3]int{-1, -1, -1}
	var seen uint
	var err error
	isObject := eachMember(body, func(name []byte, vs, ve int) bool {
		k, exact := requestKeys.match(name)
		if k < 0 {
			return true
		}
		if seen&(1<<k) != 0 {
			err = keyError(ErrDuplicateKey, requestKeys.path(k))
			return false
		}
		seen |= 1 << k
		if !exact {
			err = keyError(ErrKeyCase, requestKeys.path(k))
			return false
		}
		v := body[vs:ve]
		switch k {
		case keyModel:
			req.Model = String(body, vs)
		case keyStream:
			req.Stream = string(v) == "true"
		case keyStreamOptions:
			req.IncludeUsage, err = includeUsage(v)
		case keyMaxCompletionTokens, keyMaxTokens, keyMaxOutputTokens:
			maxTokens[k-keyMaxCompletionTokens] = intValue(v)
		}
		return err == nil
	})
	if !isObject {
		return Request{}, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	if err != nil {
		return Request{}, err
	}
	for _, n := range maxTokens {
		if n >= 0 {
			req.MaxTokens = n
			break
		}
	}
	return req, nil
}

// includeUsage reports whether the stream_options value v sets
// include_usage to true; a v that is not an object does not.
func includeUsage(v []byte) (bool, error) {
	if v[0] != '{' {
		return false, nil
	}
	s, e, found, err := uniqueMember(v, streamOptionKeys, 0)
	if err != nil {
		return false, err
	}
	return found && string(v[s:e]) == "true", nil
}

// intValue decodes a non-negative JSON integer, or returns -1.
func intValue(v []byte) int {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// WithIncludeUsage returns a copy of body whose stream_options asks for the
// final usage chunk, leaving every other byte as it was: a stream_options
// member is inserted after the opening brace, or include_usage inside
// stream_options, or the value of include_usage (or a null stream_options)
// replaced. body must be valid JSON (see ReadRequest). It fails when body
// is not an object, when stream_options is neither an object nor null, and
// when stream_options or include_usage is named twice or in another letter
// case (errors wrapping ErrDuplicateKey and ErrKeyCase), which would leave
// the upstream free to read the copy the proxy did not edit.
func WithIncludeUsage(body []byte) ([]byte, error) {
	start, end, found, err := uniqueMember(body, requestKeys, keyStreamOptions)
	if err != nil {
		return nil, fmt.Errorf("edit stream_options: %w", err)
	}
	if !found {
		return insertMember(body, skipWS(body, 0), `"stream_options":{"include_usage":true}`), nil
	}
	opts := body[start:end]
	switch {
	case string(opts) == "null":
		return splice(body, start, end, `{"include_usage":true}`), nil
	case opts[0] == '{':
		s, e, found, err := uniqueMember(opts, streamOptionKeys, 0)
		if err != nil {
			return nil, fmt.Errorf("edit stream_options: %w", err)
		}
		if found {
			return splice(body, start+s, start+e, "true"), nil
		}
		return insertMember(body, start, `"include_usage":true`), nil
	}
	return nil, errors.New("edit stream_options: not an object")
}

// insertMember returns a copy of b with member inserted first into the
// object that opens at b[open].
func insertMember(b []byte, open int, member string) []byte {
	sep := ","
	if b[skipWS(b, open+1)] == '}' {
		sep = ""
	}
	return splice(b, open+1, open+1, member, sep)
}

// splice returns a copy of b with b[start:end] replaced by the
// concatenation of s.
func splice(b []byte, start, end int, s ...string) []byte {
	n := len(b) - (end - start)
	for _, p := range s {
		n += len(p)
	}
	out := make([]byte, 0, n)
	out = append(out, b[:start]...)
	for _, p := range s {
		out = append(out, p...)
	}
	return append(out, b[end:]...)
}
