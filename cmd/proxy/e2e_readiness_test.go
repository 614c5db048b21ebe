package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// A schema rolled back under a running replica takes it out of service
// (503, the schema named in the body) until the schema is current again.
func TestReadinessFollowsTheSchemaAfterStartUp(t *testing.T) {
	db := testenv.PostgresURL(t)
	dir := t.TempDir()
	dbEnv := []string{"DATABASE_URL=" + db}
	if code, out := runBinary(t, dir, "migrate", dbEnv, "up"); code != 0 {
		t.Fatalf("migrate up: exit %d\n%s", code, out)
	}
	p := startProxy(t, dir, "DATABASE_URL="+db, "DATABASE_AUTO_MIGRATE=false", "ENCRYPTION_KEY="+testEncryptionKey)
	if code, body := get(t, p.addr+"/readyz"); code != http.StatusOK || !strings.Contains(body, `"schema":"ok"`) || !strings.Contains(body, `"status":"ready"`) {
		t.Fatalf("/readyz = %d %s, want 200 ready with the schema ok", code, body)
	}

	if code, out := runBinary(t, dir, "migrate", dbEnv, "down", "1"); code != 0 {
		t.Fatalf("migrate down 1: exit %d\n%s", code, out)
	}
	// The schema is re-read at most every schemaProbeInterval.
	var body string
	waitFor(t, schemaProbeInterval+5*time.Second, "/readyz 503 after migrate down", func() bool {
		var code int
		code, body = get(t, p.addr+"/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, `"schema":"behind: version`) || !strings.Contains(body, `"status":"unavailable"`) {
		t.Errorf("/readyz body after migrate down = %s, want the schema named behind", body)
	}
	// The log reaches the test through a pipe, after the answer.
	waitFor(t, 5*time.Second, "a log line for the schema change", func() bool {
		return strings.Contains(p.output.String(), "dependency unready")
	})

	if code, out := runBinary(t, dir, "migrate", dbEnv, "up"); code != 0 {
		t.Fatalf("migrate up: exit %d\n%s", code, out)
	}
	waitFor(t, schemaProbeInterval+5*time.Second, "/readyz 200 after migrate up", func() bool {
		code, _ := get(t, p.addr+"/readyz")
		return code == http.StatusOK
	})
}
