package proxy

import "testing"

// TestEventEnd checks the event boundaries the relay cuts at: a blank line
// after LF or CRLF line ends, and none while the event is incomplete.
func TestEventEnd(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"data: x\n\n", 9},
		{"data: x\n\ndata: y\n\n", 9},
		{"data: x\r\n\r\n", 11},
		{"id: 1\ndata: x\n\nrest", 15},
		{"data: x\n", -1},
		{"data: x\ndata: y", -1},
		{"", -1},
		{"\n\n", 2},
	}
	for _, tt := range tests {
		if got := eventEnd([]byte(tt.in)); got != tt.want {
			t.Errorf("eventEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestIsDone checks that only a "data: [DONE]" line ends an OpenAI stream,
// not the same text inside an answer.
func TestIsDone(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"data: [DONE]\n\n", true},
		{"id: 7\ndata: [DONE]\n\n", true},
		{`data: {"choices":[{"delta":{"content":"[DONE]"}}]}` + "\n\n", false},
		{`data: {"choices":[{"delta":{"content":"say data: [DONE]"}}]}` + "\n\n", false},
		{"data: {}\r\ndata: [DONE]\r\n\r\n", true},
		{"[DONE]\n\n", false},
		{"data: [DON", false},
	}
	for _, tt := range tests {
		if got := isDone([]byte(tt.in)); got != tt.want {
			t.Errorf("isDone(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
