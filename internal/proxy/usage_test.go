package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const (
	chatJSON = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "The JSON has \"usage\": {\"prompt_tokens\": 999} and \"model\": \"fake\".", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
  "service_tier": "default"
}`
	anthropicJSON = `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":6,"service_tier":"standard"}}`
	responsesJSON = `{"id":"resp_1","object":"response","model":"gpt-4.1","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{"usage":"note"}}`
)

// embeddingsJSON returns an embeddings response with n vectors; the model
// and usage come after the data, as OpenAI sends them.
func embeddingsJSON(n int) string {
	var b strings.Builder
	b.WriteString(`{"object":"list","data":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":[`, i)
		for j := range 64 {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString("-0.006929283")
		}
		b.WriteString("]}")
	}
	b.WriteString(`],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`)
	return b.String()
}

func TestCaptureUsage(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantUsage Usage
		wantModel string
	}{
		{"chat", chatJSON, Usage{19, 10, 29}, "gpt-4.1-2025-04-14"},
		{"anthropic with cache", anthropicJSON, Usage{20, 6, 26}, "claude-sonnet-4-20250514"},
		{"responses", responsesJSON, Usage{36, 87, 123}, "gpt-4.1"},
		{"embeddings small", embeddingsJSON(2), Usage{8, 0, 8}, "text-embedding-3-small"},
		{"embeddings larger than the window", embeddingsJSON(200), Usage{8, 0, 8}, "text-embedding-3-small"},
		{"no usage", `{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}`, Usage{}, ""},
		{"usage null", `{"model":"m","usage":null}`, Usage{}, "m"},
		{"truncated", `{"model":"m","usage":{"prompt_tokens":3`, Usage{}, "m"},
		{"garbage", "\x00\xff\"usage\":{\"usage\":", Usage{}, ""},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 7, 4096, 1 << 20} {
			t.Run(fmt.Sprintf("%s/chunk%d", tt.name, chunk), func(t *testing.T) {
				c := capture{head: make([]byte, 0, headCap), tail: make([]byte, 0, 2*tailCap)}
				for b := []byte(tt.body); len(b) > 0; {
					n := min(chunk, len(b))
					c.write(b[:n])
					b = b[n:]
				}
				if len(c.head) > headCap || len(c.tail) > 2*tailCap {
					t.Fatalf("capture grew: head %d, tail %d", len(c.head), len(c.tail))
				}
				usage, model := c.result()
				if usage != tt.wantUsage || model != tt.wantModel {
					t.Errorf("result = %+v, %q; want %+v, %q", usage, model, tt.wantUsage, tt.wantModel)
				}
			})
		}
	}
}

// chunkReader returns its chunks one Read at a time.
type chunkReader struct{ chunks []string }

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if n == len(r.chunks[0]) {
		r.chunks = r.chunks[1:]
	} else {
		r.chunks[0] = r.chunks[0][n:]
	}
	return n, nil
}

// flushRecorder records what was written before each flush.
type flushRecorder struct {
	*httptest.ResponseRecorder
	flushed []string
	last    int
}

func (f *flushRecorder) Flush() {
	b := f.Body.Bytes()
	f.flushed = append(f.flushed, string(b[f.last:]))
	f.last = len(b)
}

func TestSSERelay(t *testing.T) {
	const (
		c1    = "data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n"
		c2    = "data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"usage\\\":{\\\"prompt_tokens\\\":5}\"}}],\"usage\":null}\n\n"
		us    = "data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
		done  = "data: [DONE]\n\n"
		crlf1 = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n"
		crlf2 = "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n"
	)
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", maxEventSize+10) + "\"}}]}\n\n"
	tests := []struct {
		name      string
		chunks    []string
		strip     bool
		want      string
		wantUsage Usage
		wantModel string
		wantFlush int
	}{
		{"strip usage chunk", []string{c1 + c2 + us + done}, true, c1 + c2 + done, Usage{9, 2, 11}, "gpt-4o-2024-08-06", 1},
		{"keep usage chunk", []string{c1, c2, us, done}, false, c1 + c2 + us + done, Usage{9, 2, 11}, "gpt-4o-2024-08-06", 4},
		{"split everywhere", strings.Split(c1+c2+us+done, ""), true, c1 + c2 + done, Usage{9, 2, 11}, "gpt-4o-2024-08-06", -1},
		{"crlf anthropic", []string{crlf1[:10], crlf1[10:] + crlf2}, false, crlf1 + crlf2, Usage{25, 15, 40}, "claude-x", 1},
		{"no final blank line", []string{c1, "data: [DONE]"}, false, c1 + "data: [DONE]", Usage{100, 1, 101}, "gpt-4o-2024-08-06", 2},
		{"oversized event passes whole", []string{c1, big, us}, true, c1 + big, Usage{9, 2, 11}, "gpt-4o-2024-08-06", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
			s := sseRelay{w: rec, rc: http.NewResponseController(rec), strip: tt.strip}
			readErr, writeErr := s.run(&chunkReader{chunks: append([]string(nil), tt.chunks...)}, make([]byte, copyBufSize))
			if readErr != nil || writeErr != nil {
				t.Fatalf("run: %v, %v", readErr, writeErr)
			}
			if got := rec.Body.String(); got != tt.want {
				t.Errorf("client got %d bytes %.300q\nwant %d bytes %.300q", len(got), got, len(tt.want), tt.want)
			}
			if got := s.result(Info{PromptEstimate: 100}, true); got != tt.wantUsage {
				t.Errorf("usage = %+v, want %+v", got, tt.wantUsage)
			}
			if s.model != tt.wantModel {
				t.Errorf("model = %q, want %q", s.model, tt.wantModel)
			}
			if tt.wantFlush >= 0 && len(rec.flushed) != tt.wantFlush {
				t.Errorf("flushes = %d %q, want %d", len(rec.flushed), rec.flushed, tt.wantFlush)
			}
			if strings.Join(rec.flushed, "") != rec.Body.String() {
				t.Error("bytes written but never flushed")
			}
		})
	}
}

func TestSSEResultEstimates(t *testing.T) {
	s := sseRelay{}
	for _, ev := range []string{
		`data: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}`,
		`data: {"type":"content_block_delta","delta":{"text":"a"}}`,
		`data: {"type":"content_block_delta","delta":{"text":"b"}}`,
		`data: {"type":"content_block_delta","delta":{"text":"c"}}`,
	} {
		s.inspect([]byte(ev))
	}
	if got, want := s.result(Info{PromptEstimate: 7}, false), (Usage{25, 3, 28}); got != want {
		t.Errorf("incomplete stream usage = %+v, want %+v", got, want)
	}
	s.inspect([]byte(`data: {"type":"message_delta","delta":{},"usage":{"output_tokens":40}}`))
	if got, want := s.result(Info{PromptEstimate: 7}, true), (Usage{25, 40, 65}); got != want {
		t.Errorf("complete stream usage = %+v, want %+v", got, want)
	}
}
