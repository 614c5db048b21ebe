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
	t.Parallel()
	db := testenv.PostgresURL(t)
	migrateDB(t, db, 0)
	p := startProxy(t, t.TempDir(), "DATABASE_URL="+db, "DATABASE_AUTO_MIGRATE=false", "ENCRYPTION_KEY="+testEncryptionKey)
	if code, body := get(t, p.addr+"/readyz"); code != http.StatusOK || !strings.Contains(body, `"schema":"ok"`) || !strings.Contains(body, `"status":"ready"`) {
		t.Fatalf("/readyz = %d %s, want 200 ready with the schema ok", code, body)
	}

	migrateDB(t, db, 1)
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

	migrateDB(t, db, 0)
	waitFor(t, schemaProbeInterval+5*time.Second, "/readyz 200 after migrate up", func() bool {
		code, _ := get(t, p.addr+"/readyz")
		return code == http.StatusOK
	})
}
