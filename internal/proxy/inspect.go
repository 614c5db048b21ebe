package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ErrBadJSON is returned (wrapped) by Inspect for a body that is not a valid
// JSON object with the expected field types.
var ErrBadJSON = errors.New("invalid JSON body")

// Info is what the gateway needs to know about a request body.
type Info struct {
	Model string
	// Stream is the body's "stream" flag.
	Stream bool
	// IncludeUsage is true when stream_options.include_usage is already true.
	IncludeUsage bool
	// MaxTokens is max_completion_tokens, else max_tokens, else
	// max_output_tokens; 0 when absent.
	MaxTokens int
	// PromptEstimate is len(body)/4, a rough prompt token count.
	PromptEstimate int
}

// Inspect scans a JSON request body for the fields in Info without
// decoding the rest (messages, tools...). An empty (or all-whitespace) body
// gives the zero Info and no error; any other body that is not a JSON object
// gives an error wrapping ErrBadJSON whose message holds no body content.
// Fields of an unexpected type are ignored: judging the request is the
// upstream's job, the gateway only needs its estimates.
func Inspect(body []byte) (Info, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return Info{}, nil
	}
	if !validJSON(body) {
		return Info{}, fmt.Errorf("%w: not valid JSON", ErrBadJSON)
	}
	info := Info{PromptEstimate: len(body) / 4}
	// max_completion_tokens, max_tokens, max_output_tokens; -1 when absent.
	maxTokens := [3]int{-1, -1, -1}
	isObject := eachMember(body, func(name []byte, vs, ve int) bool {
		v := body[vs:ve]
		switch string(name) {
		case "model":
			info.Model = stringValue(body, vs)
		case "stream":
			info.Stream = string(v) == "true"
		case "stream_options":
			s, e, found, _ := topLevelValue(v, "include_usage")
			info.IncludeUsage = found && string(v[s:e]) == "true"
		case "max_completion_tokens":
			maxTokens[0] = intValue(v)
		case "max_tokens":
			maxTokens[1] = intValue(v)
		case "max_output_tokens":
			maxTokens[2] = intValue(v)
		}
		return true
	})
	if !isObject {
		return Info{}, fmt.Errorf("%w: not a JSON object", ErrBadJSON)
	}
	for _, n := range maxTokens {
		if n >= 0 {
			info.MaxTokens = n
			break
		}
	}
	return info, nil
}

// intValue decodes a non-negative JSON integer, or returns -1.
func intValue(v []byte) int {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// withIncludeUsage returns a copy of body whose stream_options asks for the
// final usage chunk. Without stream_options it is one insertion after the
// opening brace; otherwise only the stream_options value is re-encoded.
func withIncludeUsage(body []byte) ([]byte, error) {
	start, end, found, ok := topLevelValue(body, "stream_options")
	if !ok {
		return nil, errors.New("edit stream_options: body is not a JSON object")
	}
	if !found {
		open := skipWS(body, 0)
		sep := ","
		if body[skipWS(body, open+1)] == '}' {
			sep = ""
		}
		const opt = `"stream_options":{"include_usage":true}`
		out := make([]byte, 0, len(body)+len(opt)+1)
		out = append(out, body[:open+1]...)
		out = append(out, opt...)
		out = append(out, sep...)
		return append(out, body[open+1:]...), nil
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal(body[start:end], &opts); err != nil {
		return nil, fmt.Errorf("edit stream_options: %w", err)
	}
	if opts == nil {
		opts = map[string]json.RawMessage{}
	}
	opts["include_usage"] = json.RawMessage("true")
	value, err := json.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("edit stream_options: %w", err)
	}
	out := make([]byte, 0, len(body)-(end-start)+len(value))
	out = append(out, body[:start]...)
	out = append(out, value...)
	return append(out, body[end:]...), nil
}
