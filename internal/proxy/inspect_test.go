package proxy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInspect(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Info
	}{
		{"chat stream", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":50}`,
			Info{Model: "gpt-4o", Stream: true, MaxTokens: 50}},
		{"include usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			Info{Model: "m", Stream: true, IncludeUsage: true}},
		{"include usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			Info{Model: "m", Stream: true}},
		{"max_completion_tokens wins", `{"model":"o1","max_tokens":5,"max_completion_tokens":9}`,
			Info{Model: "o1", MaxTokens: 9}},
		{"responses max_output_tokens", `{"model":"gpt-4.1","input":"x","max_output_tokens":7}`,
			Info{Model: "gpt-4.1", MaxTokens: 7}},
		{"nulls", `{"model":"m","stream":null,"stream_options":null,"max_tokens":null}`, Info{Model: "m"}},
		{"empty body", ``, Info{}},
		{"whitespace body", " \n", Info{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect([]byte(tt.body))
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if strings.TrimSpace(tt.body) != "" {
				tt.want.PromptEstimate = len(tt.body) / 4
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Inspect (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInspectBadJSON(t *testing.T) {
	for _, body := range []string{`{"model":`, `not json`, `{"model":"m"}x`, `[1,2]`, `{"model":"secret prompt`} {
		_, err := Inspect([]byte(body))
		if !errors.Is(err, ErrBadJSON) {
			t.Errorf("Inspect(%q) error = %v, want ErrBadJSON", body, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Inspect error leaks body content: %v", err)
		}
	}
}

// TestInspectLenientTypes: valid JSON with odd field types is the upstream's
// to judge; the gateway forwards it with neutral estimates.
func TestInspectLenientTypes(t *testing.T) {
	body := `{"model":42,"stream":"yes","max_tokens":"many","stream_options":[true]}`
	got, err := Inspect([]byte(body))
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if want := (Info{PromptEstimate: len(body) / 4}); got != want {
		t.Errorf("Inspect = %+v, want %+v", got, want)
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
		{"other option kept", `{"stream_options": {"x": [1, {"y": "}"}]}, "stream": true}`, `{"stream_options": {"include_usage":true,"x":[1,{"y":"}"}]}, "stream": true}`},
		{"key inside string not confused", `{"messages":[{"content":"\"stream_options\":{}"}],"stream":true}`, `{"stream_options":{"include_usage":true},"messages":[{"content":"\"stream_options\":{}"}],"stream":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := withIncludeUsage([]byte(tt.body))
			if err != nil {
				t.Fatalf("withIncludeUsage: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("withIncludeUsage =\n%s\nwant\n%s", got, tt.want)
			}
			info, err := Inspect(got)
			if err != nil || !info.IncludeUsage {
				t.Errorf("edited body: Inspect = %+v, %v; want include_usage", info, err)
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
	for _, body := range []string{``, `[]`, `{"a":`, `{"stream_options":[1]}`, `{"a" 1}`} {
		if got, err := withIncludeUsage([]byte(body)); err == nil {
			t.Errorf("withIncludeUsage(%q) = %s, want error", body, got)
		}
	}
}
