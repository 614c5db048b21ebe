package baseline

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/testkit/upstream"
)

func TestForwardsWithUpstreamKey(t *testing.T) {
	var gotPath string
	m := upstream.New(upstream.Options{Key: "upstream-key", Chunks: 3})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		m.ServeHTTP(w, r)
	}))
	defer up.Close()
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(New(u, "upstream-key"))
	defer px.Close()

	for _, tc := range []struct {
		body string
		size int
	}{{`{"model":"m"}`, m.JSONSize()}, {`{"stream":true}`, m.StreamSize(false)}} {
		req, err := http.NewRequest(http.MethodPost, px.URL+"/v1/chat/completions", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer client-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || len(b) != tc.size {
			t.Errorf("%s: status %d, %d bytes (want 200, %d): %s", tc.body, resp.StatusCode, len(b), tc.size, b)
		}
		if gotPath != "/v1/chat/completions" {
			t.Errorf("upstream path %q", gotPath)
		}
	}
}
