package jsonscan

import (
	"bytes"
	"testing"
)

func TestScanners(t *testing.T) {
	b := []byte(`{"a":"x\"model\":1","model" : "m\u00e9","n":[1,{"usage":2}],"s":"\\"}`)
	if got := String(b, FirstKey(b, `"model"`)); got != "mé" {
		t.Errorf("FirstKey model = %q, want mé", got)
	}
	if v := FirstKey(b, `"usage"`); v < 0 || !bytes.HasPrefix(b[v:], []byte("2}")) {
		t.Errorf("FirstKey usage = %d", v)
	}
	tail := []byte(`{"model":"real","data":[{"embedding":[0.1]}],"note":"\"model\":\"fake\""}`)
	if got := String(tail, LastKey(tail, `"model"`)); got != "real" {
		t.Errorf("LastKey model = %q, want real (the later match is inside a string)", got)
	}
	for _, bad := range []string{"", `"`, `{`, `{"a":`, `"usage":`, `\"usage\":{"prompt_tokens":1}`} {
		if _, ok := LastUsage([]byte(bad)); ok {
			t.Errorf("LastUsage(%q) found usage", bad)
		}
		_ = String([]byte(bad), FirstKey([]byte(bad), `"usage"`))
		_ = String([]byte(bad), LastKey([]byte(bad), `"usage"`))
		_, _, _, _ = uniqueMember([]byte(bad), streamOptionKeys, 0)
	}
}

func TestLastUsage(t *testing.T) {
	n := func(v int) Count { return Count{v, true} }
	tests := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"openai with details", `{"id":"x","usage":{"prompt_tokens":120, "completion_tokens" : 210,"total_tokens":330,` +
			`"prompt_tokens_details":{"cached_tokens":64,"total_tokens":9},"completion_tokens_details":{"reasoning_tokens":7}}}`,
			Usage{PromptTokens: n(120), CompletionTokens: n(210), TotalTokens: n(330)}, true},
		{"anthropic with cache", `{"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":20,"output_tokens":3}}`,
			Usage{InputTokens: n(10), OutputTokens: n(3), CacheCreationInputTokens: n(5), CacheReadInputTokens: n(20)}, true},
		{"null counts", `{"usage":{"prompt_tokens":null,"completion_tokens":4}}`, Usage{CompletionTokens: n(4)}, true},
		{"last one wins", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"x":{"usage":{"prompt_tokens":2,"completion_tokens":3}}}`,
			Usage{PromptTokens: n(2), CompletionTokens: n(3)}, true},
		{"an invalid later object is skipped", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"x":{"usage":{"prompt_tokens":"2"}}}`,
			Usage{PromptTokens: n(1), CompletionTokens: n(1)}, true},
		{"cache counts alone", `{"usage":{"cache_read_input_tokens":3}}`, Usage{}, false},
		{"float", `{"usage":{"prompt_tokens":1.5,"completion_tokens":1}}`, Usage{}, false},
		{"negative", `{"usage":{"prompt_tokens":-1}}`, Usage{}, false},
		{"too long", `{"usage":{"prompt_tokens":1234567890123456789}}`, Usage{}, false},
		{"no counts", `{"usage":{"other":1}}`, Usage{}, false},
		{"not an object", `{"usage":[1,2]}`, Usage{}, false},
		{"truncated", `{"usage":{"prompt_tokens":1,"completion_tok`, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, ok := LastUsage([]byte(tt.body))
			if ok != tt.ok || (ok && u != tt.want) {
				t.Errorf("LastUsage = %+v, %v; want %+v, %v", u, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestIndexQuoted checks IndexQuoted against bytes.Index on inputs full of
// near misses: quotes, the key's letters without their quote, keys at both
// ends, and non-quoted patterns.
func TestIndexQuoted(t *testing.T) {
	inputs := []string{
		``, `"`, `"usage"`, `usage"`, `x"usage"`, `"usage`, `""usage"`, `{"a":"usage","usage":{}}`,
		`usage" "usag" "usage" "usage"`, `{"delta":{"content":"usage\" is \"usage\""}}`, `uuuu"u"us"usa"usag"usage"`,
	}
	for _, in := range inputs {
		for _, pat := range []string{`"usage"`, `"u"`, `usage`, `"`, `""`} {
			want := bytes.Index([]byte(in), []byte(pat))
			if got := IndexQuoted([]byte(in), pat); got != want {
				t.Errorf("IndexQuoted(%q, %q) = %d, want %d", in, pat, got, want)
			}
		}
	}
}

// FuzzIndexQuoted checks that IndexQuoted finds what bytes.Index finds.
func FuzzIndexQuoted(f *testing.F) {
	f.Add([]byte(`{"usage":{"total_tokens":3}}`), `"usage"`)
	f.Add([]byte(`usage" "usage"`), `"usage"`)
	f.Fuzz(func(t *testing.T, b []byte, pat string) {
		if got, want := IndexQuoted(b, pat), bytes.Index(b, []byte(pat)); got != want {
			t.Fatalf("IndexQuoted(%q, %q) = %d, want %d", b, pat, got, want)
		}
	})
}
