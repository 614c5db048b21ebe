package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

var validSeeds = []string{
	`{}`, `[]`, ` {"a" : [1, -0.5e+3, "x\"y\\u00e9", true, false, null, {}]} `, `"s"`, `0`, `-0`, `1.0E-2`, `[[[]]]`,
	`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`,
	``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `[01]`, `[1.]`, `[.5]`, `[1e]`, `[-]`, `["\x"]`, `["\u12"]`,
	"[\"a\x01\"]", `[tru]`, `[nul]`, `{"a":1}{}`, `[1 2]`, `{"a":[}`, `[}`, `{]`, `"unterminated`, `["\`, `+1`, `[NaN]`,
	"[\"\xff\xfe\"]", `{"a":{"b":{"c":[1,{"d":null}]}}}`, `[1,2,3]x`,
}

func TestValidJSONMatchesEncodingJSON(t *testing.T) {
	for _, s := range validSeeds {
		if got, want := valid([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("valid(%q) = %v, json.Valid says %v", s, got, want)
		}
	}
	deep := strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting)
	tooDeep := "[" + deep + "]"
	if !valid([]byte(deep)) || valid([]byte(tooDeep)) {
		t.Errorf("nesting: %d levels accepted %v, %d levels accepted %v (json.Valid: %v, %v)", maxNesting, valid([]byte(deep)),
			maxNesting+1, valid([]byte(tooDeep)), json.Valid([]byte(deep)), json.Valid([]byte(tooDeep)))
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := valid(b), json.Valid(b); got != want {
			t.Fatalf("valid(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"` + strings.Repeat("benchmark ", 40) + `"}]}`)
	b.Run("valid", func(b *testing.B) {
		for b.Loop() {
			valid(body)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		for b.Loop() {
			json.Valid(body)
		}
	})
}
