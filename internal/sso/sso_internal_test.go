package sso

import (
	"strings"
	"testing"
	"time"
)

func TestUserCodes(t *testing.T) {
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 2000 {
		c, err := newUserCode()
		if err != nil {
			t.Fatal(err)
		}
		if len(c) != userCodeLen || normalizeUserCode(displayUserCode(c)) != c {
			t.Fatalf("code %q does not round-trip through its display form %q", c, displayUserCode(c))
		}
		if seen[c] {
			t.Fatalf("repeated code %q", c)
		}
		seen[c] = true
		for _, r := range c {
			counts[r]++
		}
	}
	if len(counts) != len(userCodeAlphabet) {
		t.Errorf("codes use %d of the %d letters", len(counts), len(userCodeAlphabet))
	}
	for _, tc := range []struct{ in, want string }{
		{"bcdf-ghjk", "BCDFGHJK"}, {" BCDF GHJK ", "BCDFGHJK"}, {"BCDFGHJK", "BCDFGHJK"},
		{"BCDF-GHJA", ""}, {"BCDF-GHJ", ""}, {"BCDF-GHJKL", ""}, {"BCDF-GHJ0", ""}, {"", ""},
		{strings.Repeat("-", 40) + "BCDFGHJK", ""}, {"BCDF\u212AGHJ", ""},
	} {
		if got := normalizeUserCode(tc.in); got != tc.want {
			t.Errorf("normalizeUserCode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBlockFor(t *testing.T) {
	for n, want := range map[int]time.Duration{
		1: 0, FreeAttempts: 0, FreeAttempts + 1: BlockBase, FreeAttempts + 2: 2 * BlockBase,
		FreeAttempts + 3: 4 * BlockBase, FreeAttempts + 20: BlockMax, 1 << 30: BlockMax,
	} {
		if got := blockFor(n); got != want {
			t.Errorf("blockFor(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestDomainAllowed(t *testing.T) {
	s := New(Config{AllowedDomains: []string{"example.com"}}, nil, nil, nil)
	for email, want := range map[string]bool{
		"a@example.com": true, "a@EXAMPLE.com": true, "a@sub.example.com": false, "a@example.com.evil": false,
		"example.com": false, `"a@example.com"@evil.test`: false,
	} {
		if got := s.domainAllowed(email); got != want {
			t.Errorf("domainAllowed(%q) = %t, want %t", email, got, want)
		}
	}
	if !New(Config{}, nil, nil, nil).domainAllowed("anyone@anywhere.test") {
		t.Error("an empty list must allow any domain")
	}
}

func TestFormatWait(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second: "30 seconds", 29*time.Second + time.Millisecond: "30 seconds",
		2 * time.Minute: "2 minutes", 61 * time.Minute: "61 minutes",
	} {
		if got := formatWait(d); got != want {
			t.Errorf("formatWait(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestJSONParams(t *testing.T) {
	got, err := jsonParams([]byte(`{"grant_type":"g","device_code":"d","n":1,"o":{"x":"y"}}`))
	if err != nil || len(got) != 2 || got["grant_type"] != "g" || got["device_code"] != "d" {
		t.Errorf("jsonParams: %v, %v", got, err)
	}
	for _, bad := range []string{
		`{"device_code":"a","device_code":"b"}`, `{"device_code":"a","devic\u0065_code":"b"}`, `[]`, `"x"`, `{"a":"b"} {}`, `{"a":`, ``,
	} {
		if got, err := jsonParams([]byte(bad)); err == nil {
			t.Errorf("jsonParams(%s) = %v, want an error", bad, got)
		}
	}
}
