package jsonscan

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestMember(t *testing.T) {
	tests := []struct {
		body, name, want string
		found            bool
		err              error
	}{
		{`{"a":1,"messages":[1,2]}`, "messages", `[1,2]`, true, nil},
		{`{"a":1}`, "messages", ``, false, nil},
		{`{"me\u0073sages":[]}`, "messages", `[]`, true, nil},
		{`{"messages":[],"messages":[]}`, "messages", ``, false, ErrDuplicateKey},
		{`{"Messages":[]}`, "messages", ``, false, ErrKeyCase},
		{`[1]`, "messages", ``, false, ErrInvalid},
	}
	for _, tc := range tests {
		s, e, found, err := Member([]byte(tc.body), tc.name)
		if !errors.Is(err, tc.err) || found != tc.found || (found && tc.body[s:e] != tc.want) {
			t.Errorf("Member(%s) = (%q, %t, %v), want (%q, %t, %v)", tc.body, tc.body[s:e], found, err, tc.want, tc.found, tc.err)
		}
	}
}

func TestElements(t *testing.T) {
	b := []byte(` [ {"a":"]"} , 2,"x" ] `)
	got, ok := Elements(b)
	if !ok || len(got) != 3 || string(b[got[0][0]:got[0][1]]) != `{"a":"]"}` || string(b[got[2][0]:got[2][1]]) != `"x"` {
		t.Fatalf("Elements = %v, %t", got, ok)
	}
	for _, bad := range []string{``, `[`, `[1,`, `{}`, `[1 2]`} {
		if _, ok := Elements([]byte(bad)); ok {
			t.Errorf("Elements(%q) ok", bad)
		}
	}
	if got, ok := Elements([]byte(`[]`)); !ok || len(got) != 0 {
		t.Errorf("Elements([]) = %v, %t", got, ok)
	}
}

func TestDeltaText(t *testing.T) {
	tests := []struct{ ev, want string }{
		{`data: {"choices":[{"delta":{"role":"assistant","content":"Hel\"lo"}}]}`, `Hel\"lo`},
		{`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"a\nb"}}`, `a\nb`},
		{`data: {"choices":[{"delta":{"content":null}}]}`, ``},
		{`data: {"choices":[{"delta":{"tool_calls":[]}}],"text":"no"}`, ``},
		{`data: {"choices":[{"delta":{"content":"cut`, ``},
		{`data: [DONE]`, ``},
	}
	var all []byte
	for _, tc := range tests {
		got := DeltaText([]byte(tc.ev))
		if string(got) != tc.want {
			t.Errorf("DeltaText(%s) = %q, want %q", tc.ev, got, tc.want)
		}
		all = append(all, got...)
	}
	var s string
	if err := json.Unmarshal([]byte(`"`+string(all)+`"`), &s); err != nil || s != "Hel\"loa\nb" {
		t.Fatalf("concatenated deltas decode to (%q, %v)", s, err)
	}
}
