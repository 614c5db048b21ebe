package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Request
	}{
		{"chat stream", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":50}`,
			Request{Model: "gpt-4o", Stream: true, MaxTokens: 50}},
		{"include usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			Request{Model: "m", Stream: true, IncludeUsage: true}},
		{"include usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			Request{Model: "m", Stream: true}},
		{"max_completion_tokens wins", `{"model":"o1","max_tokens":5,"max_completion_tokens":9}`,
			Request{Model: "o1", MaxTokens: 9}},
		{"responses max_output_tokens", `{"model":"gpt-4.1","input":"x","max_output_tokens":7}`,
			Request{Model: "gpt-4.1", MaxTokens: 7}},
		{"nulls", `{"model":"m","stream":null,"stream_options":null,"max_tokens":null}`, Request{Model: "m"}},
		{"escaped keys", `{"\u006dodel":"m","str\u0065am":true,"max_t\u006fkens":8,"stream\u005foptions":{"include\u005Fusage":true}}`,
			Request{Model: "m", Stream: true, MaxTokens: 8, IncludeUsage: true}},
		{"escaped max_completion_tokens wins", `{"max_tokens":5,"max\u005fcompletion\u005ftokens":9}`, Request{MaxTokens: 9}},
		{"escaped value", `{"model":"gpt\u002d4o","stream":true}`, Request{Model: "gpt-4o", Stream: true}},
		{"near misses are other keys", `{"model":"m","stream\u0000":true,"stream ":true,"stream\"":true,"\\stream":true,"streams":true,"Stream_":true}`,
			Request{Model: "m"}},
		{"surrogate pair in a key", `{"model":"m","str\ud83d\ude00eam":true,"stream":false}`, Request{Model: "m"}},
		{"long escaped key", `{"model":"m","` + strings.Repeat(`\u0073`, 100) + `":true}`, Request{Model: "m"}},
		{"other duplicates are the upstream's business", `{"model":"m","temperature":1,"temperature":2,"messages":[{"model":"a","model":"b","stream":true}]}`,
			Request{Model: "m"}},
		{"invalid UTF-8 model as encoding/json reads it", "{\"model\":\"m\xff\"}", Request{Model: "m\uFFFD"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadRequest([]byte(tt.body))
			if err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ReadRequest (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadRequestInvalid(t *testing.T) {
	for _, body := range []string{``, ` `, `{"model":`, `not json`, `{"model":"m"}x`, `[1,2]`, `null`, `{"model":"secret prompt`} {
		_, err := ReadRequest([]byte(body))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ReadRequest(%q) error = %v, want ErrInvalid", body, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ReadRequest error leaks body content: %v", err)
		}
	}
}

func TestReadRequestAmbiguousKeys(t *testing.T) {
	tests := []struct {
		body    string
		want    error
		wantMsg string
	}{
		{`{"stream":false,"stream":true}`, ErrDuplicateKey, `duplicate key: "stream"`},
		{`{"stream":false,"messages":[],"str\u0065am":true}`, ErrDuplicateKey, `duplicate key: "stream"`},
		{`{"model":"secret","\u006dodel":"b"}`, ErrDuplicateKey, `duplicate key: "model"`},
		{`{"messages":[{"content":"secret"}],"messages":[]}`, ErrDuplicateKey, `duplicate key: "messages"`},
		{`{"max_tokens":1,"max_t\u006fkens":1}`, ErrDuplicateKey, `duplicate key: "max_tokens"`},
		{`{"max_completion_tokens":1,"max_completion_tokens":2}`, ErrDuplicateKey, `duplicate key: "max_completion_tokens"`},
		{`{"max_output_tokens":1,"max_output_tokens":2}`, ErrDuplicateKey, `duplicate key: "max_output_tokens"`},
		{`{"stream_options":null,"stream_options":{"include_usage":true}}`, ErrDuplicateKey, `duplicate key: "stream_options"`},
		{`{"stream_options":{"include_usage":false,"include\u005fusage":true}}`, ErrDuplicateKey, `duplicate key: "stream_options.include_usage"`},
		{`{"stream":true,"Stream":false}`, ErrDuplicateKey, `duplicate key: "stream"`},
		{`{"Stream":true}`, ErrKeyCase, `key differs from a known field only in letter case: "stream"`},
		{`{"model":"m","MODEL":"secret"}`, ErrDuplicateKey, `duplicate key: "model"`},
		{`{"MODEL":"secret"}`, ErrKeyCase, `key differs from a known field only in letter case: "model"`},
		{`{"\u017ftream":true}`, ErrKeyCase, `key differs from a known field only in letter case: "stream"`},      // long s
		{"{\"\u017ftream\":true}", ErrKeyCase, `key differs from a known field only in letter case: "stream"`},    // the same, raw UTF-8
		{`{"max_to\u212aens":5}`, ErrKeyCase, `key differs from a known field only in letter case: "max_tokens"`}, // Kelvin sign
		{`{"stream_options":{"Include_Usage":true}}`, ErrKeyCase, `key differs from a known field only in letter case: "stream_options.include_usage"`},
	}
	for _, tt := range tests {
		_, err := ReadRequest([]byte(tt.body))
		if !errors.Is(err, tt.want) || errors.Is(err, ErrInvalid) {
			t.Errorf("ReadRequest(%s) error = %v, want %v", tt.body, err, tt.want)
			continue
		}
		if err.Error() != tt.wantMsg {
			t.Errorf("ReadRequest(%s) error = %q, want %q", tt.body, err, tt.wantMsg)
		}
	}
}

// TestReadRequestLenientTypes: valid JSON with odd field types is the
// upstream's to judge; the proxy forwards it with neutral estimates.
func TestReadRequestLenientTypes(t *testing.T) {
	body := `{"model":42,"stream":"yes","max_tokens":"many","stream_options":[true]}`
	got, err := ReadRequest([]byte(body))
	if err != nil {
		t.Fatalf("ReadRequest: %v", err)
	}
	if got != (Request{}) {
		t.Errorf("ReadRequest = %+v, want the zero Request", got)
	}
}

func TestWithIncludeUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // exact bytes when non-empty
	}{
		{"absent", `{"model":"m","stream":true}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{"absent, spaced", " {\n  \"model\": \"m\", \"stream\": true}", " {\"stream_options\":{\"include_usage\":true},\n  \"model\": \"m\", \"stream\": true}"},
		{"null", `{"model":"m","stream_options":null,"stream":true}`, `{"model":"m","stream_options":{"include_usage":true},"stream":true}`},
		{"false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{"other option kept", `{"stream_options": {"x": [1, {"y": "}"}]}, "stream": true}`, `{"stream_options": {"include_usage":true,"x": [1, {"y": "}"}]}, "stream": true}`},
		{"empty options", `{"stream_options": { } ,"stream":true}`, `{"stream_options": {"include_usage":true } ,"stream":true}`},
		{"include_usage null", `{"stream_options":{"x":1,"include_usage" : null}}`, `{"stream_options":{"x":1,"include_usage" : true}}`},
		{"already true", `{"stream_options":{"include_usage":true}}`, `{"stream_options":{"include_usage":true}}`},
		{"escaped keys edited in place", `{"stream\u005foptions":{"x":1.50,"include\u005fusage":false},"stream":true}`,
			`{"stream\u005foptions":{"x":1.50,"include\u005fusage":true},"stream":true}`},
		{"empty object", `{}`, `{"stream_options":{"include_usage":true}}`},
		{"key inside string not confused", `{"messages":[{"content":"\"stream_options\":{}"}],"stream":true}`, `{"stream_options":{"include_usage":true},"messages":[{"content":"\"stream_options\":{}"}],"stream":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := WithIncludeUsage([]byte(tt.body))
			if err != nil {
				t.Fatalf("withIncludeUsage: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("withIncludeUsage =\n%s\nwant\n%s", got, tt.want)
			}
			req, err := ReadRequest(got)
			if err != nil || !req.IncludeUsage {
				t.Errorf("edited body: ReadRequest = %+v, %v; want include_usage", req, err)
			}
			var before, after map[string]any
			if err := json.Unmarshal([]byte(tt.body), &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &after); err != nil {
				t.Fatal(err)
			}
			delete(before, "stream_options")
			delete(after, "stream_options")
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("other fields changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestWithIncludeUsageRejects(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"a":`, `{"stream_options":[1]}`, `{"stream_options":"x"}`, `{"stream_options":true}`, `{"a" 1}`} {
		if got, err := WithIncludeUsage([]byte(body)); err == nil {
			t.Errorf("WithIncludeUsage(%q) = %s, want error", body, got)
		}
	}
	for body, want := range map[string]error{
		`{"stream_options":{},"stream\u005foptions":{}}`:                   ErrDuplicateKey,
		`{"stream_options":{"include_usage":false,"include_usage":false}}`: ErrDuplicateKey,
		`{"stream_options":{"include_usage":false,"Include_usage":false}}`: ErrDuplicateKey,
		`{"Stream_Options":{"include_usage":false}}`:                       ErrKeyCase,
		`{"stream_options":{"include_u\u0053age":false},"stream":true}`:    ErrKeyCase,
	} {
		if got, err := WithIncludeUsage([]byte(body)); !errors.Is(err, want) {
			t.Errorf("WithIncludeUsage(%s) = %s, %v; want %v", body, got, err, want)
		}
	}
}

// requestSeeds are bodies for the fuzz tests: ordinary requests and the
// spellings ReadRequest must read as parsers do.
var requestSeeds = []string{
	`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":50}`,
	`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}`,
	`{"model":"o1","max_tokens":5,"max_completion_tokens":"9","max_output_tokens":-1}`,
	`{"model":null,"stream":null,"stream_options":null,"max_tokens":1e3}`,
	`{"\u006dodel":"\u00e9","str\u0065am":true,"stream\u005foptions":{"include\u005fusage":true}}`,
	`{"stream":false,"stream":true}`, `{"Stream":true}`, `{"\u017ftream":true}`, `{"max_to\u212aens":5}`,
	`{"str\ud83d\ude00eam":true,"s\ud800tream":1}`, `{"stream_options":{"Include_Usage":true}}`,
	`{"stream_options":[true],"model":42}`, `{}`, `[]`, ` `, `{"model":"m\u0000"}`, "{\"model\":\"\xff\"}",
}

// parsedRequest is a request body as encoding/json reads it into a struct
// (the way a Go upstream does: keys unescaped and matched
// case-insensitively), each field left raw.
type parsedRequest struct {
	Model               json.RawMessage `json:"model"`
	Stream              json.RawMessage `json:"stream"`
	StreamOptions       json.RawMessage `json:"stream_options"`
	MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
	MaxTokens           json.RawMessage `json:"max_tokens"`
	MaxOutputTokens     json.RawMessage `json:"max_output_tokens"`
}

// request applies ReadRequest's lenient reading to fields decoded by
// encoding/json.
func (p parsedRequest) request() Request {
	var req Request
	_ = json.Unmarshal(p.Model, &req.Model)
	_ = json.Unmarshal(p.Stream, &req.Stream)
	var opts struct {
		IncludeUsage json.RawMessage `json:"include_usage"`
	}
	if json.Unmarshal(p.StreamOptions, &opts) == nil {
		_ = json.Unmarshal(opts.IncludeUsage, &req.IncludeUsage)
	}
	for _, raw := range []json.RawMessage{p.MaxCompletionTokens, p.MaxTokens, p.MaxOutputTokens} {
		var n *int
		if json.Unmarshal(raw, &n) == nil && n != nil && *n >= 0 {
			req.MaxTokens = *n
			break
		}
	}
	return req
}

// members decodes the members of the JSON object b in order with
// json.Decoder (keys unescaped, compared exactly, as most parsers do).
func members(t *testing.T, b []byte) (keys []string, values []json.RawMessage) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys, values = append(keys, tok.(string)), append(values, v)
	}
	return keys, values
}

// ambiguous reports whether the members keys name one of names twice or in
// another letter case, comparing them as encoding/json matches struct
// fields; else it returns the value of each name (nil when absent).
func ambiguous(keys []string, values []json.RawMessage, names ...string) (bool, []json.RawMessage) {
	found := make([]json.RawMessage, len(names))
	for i, name := range names {
		n := 0
		for j, k := range keys {
			if strings.EqualFold(k, name) {
				n++
				if n > 1 || k != name {
					return true, nil
				}
				found[i] = values[j]
			}
		}
	}
	return false, found
}

// FuzzReadRequest checks ReadRequest against encoding/json: a body that
// names a field twice or in another case is refused, and otherwise
// ReadRequest reads what both a Go struct decoder and an exact-key reader
// read.
func FuzzReadRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ReadRequest(body)
		if !json.Valid(body) || body[skipWS(body, 0)] != '{' {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ReadRequest(%q) = %+v, %v; want ErrInvalid", body, got, err)
			}
			return
		}
		keys, values := members(t, body)
		amb, top := ambiguous(keys, values, "model", "stream", "stream_options", "max_completion_tokens",
			"max_tokens", "max_output_tokens", "messages")
		if !amb && len(top[2]) > 0 && top[2][0] == '{' {
			okeys, ovalues := members(t, top[2])
			amb, _ = ambiguous(okeys, ovalues, "include_usage")
		}
		if amb {
			if !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrKeyCase) {
				t.Fatalf("ReadRequest(%q) = %+v, %v; want ErrDuplicateKey or ErrKeyCase", body, got, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("ReadRequest(%q): %v", body, err)
		}
		exact := parsedRequest{top[0], top[1], top[2], top[3], top[4], top[5]}.request()
		var p parsedRequest
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(p.request(), got); diff != "" {
			t.Fatalf("ReadRequest(%q) differs from a Go struct decoder (-decoder +ReadRequest):\n%s", body, diff)
		}
		if diff := cmp.Diff(exact, got); diff != "" {
			t.Fatalf("ReadRequest(%q) differs from an exact-key reader (-reader +ReadRequest):\n%s", body, diff)
		}
	})
}

// FuzzWithIncludeUsage checks that, on any body ReadRequest accepts,
// withIncludeUsage gives valid JSON asking for usage and otherwise equal to
// the body, or fails only for a stream_options that is not an object.
func FuzzWithIncludeUsage(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before, err := ReadRequest(body)
		if err != nil {
			return
		}
		var in map[string]any
		decode(t, body, &in)
		opts, hasOpts := in["stream_options"]
		out, err := WithIncludeUsage(body)
		if err != nil {
			if _, isObject := opts.(map[string]any); !hasOpts || isObject || opts == nil {
				t.Fatalf("WithIncludeUsage(%q): %v", body, err)
			}
			return
		}
		after, err := ReadRequest(out)
		if err != nil || !after.IncludeUsage {
			t.Fatalf("WithIncludeUsage(%q) = %q: ReadRequest = %+v, %v; want include_usage", body, out, after, err)
		}
		before.IncludeUsage = true
		if after != before {
			t.Fatalf("WithIncludeUsage(%q) = %q: ReadRequest = %+v, want %+v", body, out, after, before)
		}
		var got map[string]any
		decode(t, out, &got)
		gotOpts, _ := got["stream_options"].(map[string]any)
		if gotOpts["include_usage"] != true {
			t.Fatalf("WithIncludeUsage(%q) = %q: stream_options = %v", body, out, got["stream_options"])
		}
		wantOpts, _ := opts.(map[string]any)
		if wantOpts == nil {
			wantOpts = map[string]any{}
		}
		delete(wantOpts, "include_usage")
		delete(gotOpts, "include_usage")
		delete(in, "stream_options")
		delete(got, "stream_options")
		if diff := cmp.Diff(in, got); diff != "" {
			t.Fatalf("WithIncludeUsage(%q) = %q changed other members (-before +after):\n%s", body, out, diff)
		}
		if diff := cmp.Diff(wantOpts, gotOpts); diff != "" {
			t.Fatalf("WithIncludeUsage(%q) = %q changed other options (-before +after):\n%s", body, out, diff)
		}
	})
}

// decode decodes the JSON b into v, numbers as json.Number (exact).
func decode(t *testing.T, b []byte, v any) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
}
