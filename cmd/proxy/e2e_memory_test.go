package main

import (
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestMemoryWiredAndFlushedOnShutdown: with MEMORY_ENABLED the proxy takes
// X-Session-ID, refuses a hostile one, lists project roots through the
// management API, and writes the session's transcript before it exits.
func TestMemoryWiredAndFlushedOnShutdown(t *testing.T) {
	g := newGateway(t, "MEMORY_ENABLED=true", "MEMORY_IDLE_TIMEOUT=1h")
	pid := g.project(t, "agents", "openai", g.up.URL+"/v1")
	_, secret := g.token(t, pid, nil)
	send := func(session, root string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, g.p.addr+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"remember me"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("X-Session-ID", session)
		req.Header.Set("X-Project-Root", root)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send("e2e-session", "/w/app/"); code != http.StatusOK {
		t.Fatalf("chat with a session: %d", code)
	}
	if code := send(strings.Repeat("x", 300), "/w/app"); code != http.StatusBadRequest {
		t.Fatalf("chat with a 300-byte session ID: %d, want 400", code)
	}
	var dirs struct {
		Data []struct {
			ProjectRoot string `json:"project_root"`
			ProjectID   string `json:"project_id"`
		} `json:"data"`
	}
	if code := g.manage(t, http.MethodGet, "/memory/projects?user_id=project:"+pid, nil, &dirs); code != http.StatusOK ||
		len(dirs.Data) != 1 || dirs.Data[0].ProjectRoot != "/w/app" || dirs.Data[0].ProjectID != "proj-1" {
		t.Fatalf("GET /manage/memory/projects: %d %+v", code, dirs)
	}

	g.p.stop(t)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(g.dir, "var", "db", "proxy.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var transcript, root string
	if err := db.QueryRow(`SELECT last_transcript, project_root FROM memory_sessions WHERE session_id = 'e2e-session'`).
		Scan(&transcript, &root); err != nil {
		t.Fatalf("transcript after shutdown: %v\n%s", err, g.p.output.String())
	}
	if !strings.Contains(transcript, "remember me") || root != "/w/app" {
		t.Errorf("stored transcript %q, root %q", transcript, root)
	}
}
