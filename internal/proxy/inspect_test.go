package proxy

import (
	"errors"
	"testing"
)

// TestInspect covers what Inspect adds to jsonscan.ReadRequest (tested
// there): empty bodies, the prompt estimate and the error sentinels.
func TestInspect(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    Info
		wantErr error
	}{
		{"empty body", ``, Info{}, nil},
		{"whitespace body", " \n", Info{}, nil},
		{"fields", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":50}`,
			Info{Model: "m", Stream: true, IncludeUsage: true, MaxTokens: 50, PromptEstimate: 20}, nil},
		{"not JSON", `{"model":`, Info{}, ErrBadJSON},
		{"not an object", `[1]`, Info{}, ErrBadJSON},
		{"duplicate key", `{"stream":false,"str\u0065am":true}`, Info{}, ErrDuplicateKey},
		{"key case", `{"Stream":true}`, Info{}, ErrKeyCase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect([]byte(tt.body))
			if got != tt.want || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("Inspect(%s) = %+v, %v; want %+v, %v", tt.body, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
