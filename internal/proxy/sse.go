package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/llmproxy/llm-proxy/internal/proxy/jsonscan"
)

// sseRelay passes a server-sent event stream through event by event,
// reading usage and model on the way and, with strip, dropping the
// usage-only chunk the client did not ask for.
//
// Flushing: each upstream read returns everything the upstream has sent so
// far (up to the buffer size); the complete events in it are written in one
// go and flushed once. So no event waits while the upstream is quiet, and a
// burst of events costs one write and one flush, not one per event.
type sseRelay struct {
	w      io.Writer
	rc     *http.ResponseController
	strip  bool
	answer *Answer // collects the deltas' text; nil without memory capture

	usage  usageAcc
	model  string
	deltas int // events carrying a "delta": the completion estimate

	midEvent bool // the rest of an oversized event comes next, uninspected
	dirty    bool // written since the last flush
	// ended: the stream's terminal event (OpenAI "data: [DONE]", Anthropic
	// message_stop) was read; what follows it is not part of the answer.
	ended bool
}

// run relays body to s.w using buf (grown privately, up to maxEventSize,
// for larger events). readErr is an upstream read failure, writeErr a
// client write or flush failure.
func (s *sseRelay) run(body io.Reader, buf []byte) (readErr, writeErr error) {
	start, end := 0, 0 // buf[start:end]: an incomplete event
	for {
		if end == len(buf) {
			switch {
			case start > 0:
				end = copy(buf, buf[start:end])
				start = 0
			case len(buf) < maxEventSize:
				grown := make([]byte, 2*len(buf))
				copy(grown, buf[:end])
				buf = grown
			default:
				if err := s.write(buf[:end]); err != nil {
					return nil, err
				}
				start, end, s.midEvent = 0, 0, true
			}
		}
		n, err := body.Read(buf[end:])
		end += n
		next, werr := s.events(buf, start, end, err == io.EOF)
		if werr != nil {
			return nil, werr
		}
		start = next
		if start == end {
			start, end = 0, 0
		}
		if ferr := s.flush(); ferr != nil {
			return nil, ferr
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// events inspects and writes the complete events in buf[start:end] (and,
// at EOF, the unterminated rest) and returns where the first incomplete
// event starts.
func (s *sseRelay) events(buf []byte, start, end int, eof bool) (int, error) {
	pending, i := start, start // buf[pending:i] is kept and not yet written
	for i < end {
		e := eventEnd(buf[i:end])
		if e < 0 {
			if !eof {
				break
			}
			e = end - i
		}
		ev := buf[i : i+e]
		keep := s.midEvent || s.inspect(ev)
		s.midEvent = false
		if !keep {
			if err := s.write(buf[pending:i]); err != nil {
				return i, err
			}
			pending = i + e
		}
		i += e
	}
	return i, s.write(buf[pending:i])
}

// eventEnd returns the length of the first event in b including its
// terminating blank line, or -1 when b holds no complete event.
func eventEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		n := bytes.IndexByte(b[i:], '\n')
		if n < 0 {
			return -1
		}
		i += n
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// inspect reads model, usage and deltas from one event and reports whether
// the client gets it.
func (s *sseRelay) inspect(ev []byte) bool {
	if isDone(ev) || jsonscan.IndexQuoted(ev, `"message_stop"`) >= 0 {
		s.ended = true
	}
	if s.model == "" {
		s.model = jsonscan.String(ev, jsonscan.FirstKey(ev, `"model"`))
	}
	if jsonscan.FirstKey(ev, `"delta"`) >= 0 {
		s.deltas++
		if s.answer != nil {
			s.answer.add(jsonscan.DeltaText(ev))
		}
	}
	u, ok := jsonscan.LastUsage(ev)
	if !ok {
		return true
	}
	s.usage.merge(u)
	return !(s.strip && emptyChoices(ev))
}

// isDone reports whether ev has a "data: [DONE]" line (OpenAI's last
// event); the same text inside an answer's JSON does not count. It looks
// for the rare '[' first: "data: " begins every event.
func isDone(ev []byte) bool {
	for from := 0; ; {
		i := bytes.Index(ev[from:], []byte("[DONE]"))
		if i < 0 {
			return false
		}
		i += from
		if i >= 6 && string(ev[i-6:i]) == "data: " && (i == 6 || ev[i-7] == '\n') {
			return true
		}
		from = i + 1
	}
}

// emptyChoices reports whether ev has "choices": [] (OpenAI's usage-only
// final chunk).
func emptyChoices(ev []byte) bool {
	v := jsonscan.FirstKey(ev, `"choices"`)
	if v < 0 || ev[v] != '[' {
		return false
	}
	rest := bytes.TrimLeft(ev[v+1:], " \t\r\n")
	return len(rest) > 0 && rest[0] == ']'
}

func (s *sseRelay) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	s.dirty = true
	_, err := s.w.Write(p)
	return err
}

func (s *sseRelay) flush() error {
	if !s.dirty {
		return nil
	}
	s.dirty = false
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// result is the stream's usage, estimated where the upstream did not report
// it (see Forward).
func (s *sseRelay) result(info Info, complete bool) Usage {
	u := s.usage.usage()
	estimated := false
	if !s.usage.hasPrompt && info.PromptEstimate > 0 {
		u.PromptTokens += info.PromptEstimate
		estimated = true
	}
	if (!complete || !s.usage.hasCompletion) && s.deltas > u.CompletionTokens {
		u.CompletionTokens = s.deltas
		estimated = true
	}
	if estimated {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u
}
