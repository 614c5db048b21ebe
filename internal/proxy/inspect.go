package proxy

import (
	"bytes"

	"github.com/llmproxy/llm-proxy/internal/proxy/jsonscan"
)

// Errors from Inspect; each is returned wrapped, with a message that holds
// no body content.
var (
	// ErrBadJSON: the body is not a valid JSON object.
	ErrBadJSON = jsonscan.ErrInvalid
	// ErrDuplicateKey: the body names a field the proxy acts on twice;
	// upstreams disagree on which copy wins.
	ErrDuplicateKey = jsonscan.ErrDuplicateKey
	// ErrKeyCase: the body names a field the proxy acts on in another letter
	// case, a key Go's encoding/json takes for the field and others ignore.
	ErrKeyCase = jsonscan.ErrKeyCase
)

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

// Inspect reads the fields in Info from a JSON request body as
// jsonscan.ReadRequest does, keys compared the way upstream parsers compare
// them. An empty (or all-whitespace) body gives the zero Info and no error.
// Any other body that is not a JSON object gives an error wrapping
// ErrBadJSON; one that names model, stream, stream_options, max_tokens,
// max_completion_tokens, max_output_tokens, messages or
// stream_options.include_usage twice, ErrDuplicateKey; one that names them
// in another letter case, ErrKeyCase. Fields of an unexpected type are
// ignored: judging the request is the upstream's job, the gateway only needs
// its estimates.
func Inspect(body []byte) (Info, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return Info{}, nil
	}
	r, err := jsonscan.ReadRequest(body)
	if err != nil {
		return Info{}, err
	}
	return Info{Model: r.Model, Stream: r.Stream, IncludeUsage: r.IncludeUsage, MaxTokens: r.MaxTokens,
		PromptEstimate: len(body) / 4}, nil
}
