package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// usageIDs returns the usage IDs of the SQLite database at path, after
// checking its integrity.
func usageIDs(t *testing.T, path string) map[string]bool {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check of %s = %q, %v", path, check, err)
	}
	rows, err := db.Query(`SELECT id FROM usage`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestSQLiteBackupWhileServingAndRestore(t *testing.T) {
	t.Parallel()
	path := testenv.SQLitePath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	teststore.Migrate(t, schema.DriverSQLite, path)
	dbURL := "sqlite:///" + path
	live, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	// A writer inserts usage through the store, as the proxy does, until
	// told to stop; committed lists what InsertUsage reported committed.
	var (
		mu        sync.Mutex
		committed []string
		writeErr  error
		stop      = make(chan struct{})
		started   = make(chan struct{})
		wg        sync.WaitGroup
	)
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			batch := make([]store.Usage, 20)
			for i := range batch {
				batch[i] = store.Usage{ID: uuid.NewString(), CreatedAt: time.Now(), RequestID: fmt.Sprint(n, i),
					Endpoint: "/v1/chat/completions", Status: 200}
			}
			if err := live.InsertUsage(context.Background(), batch); err != nil {
				mu.Lock()
				writeErr = err
				mu.Unlock()
				return
			}
			mu.Lock()
			for _, u := range batch {
				committed = append(committed, u.ID)
			}
			mu.Unlock()
			if n == 10 {
				close(started)
			}
		}
	})
	<-started
	mu.Lock()
	before := append([]string(nil), committed...)
	mu.Unlock()

	file := filepath.Join(t.TempDir(), "backup.db")
	r := migrate(t, dbURL, "backup", "--to", file)
	mu.Lock()
	during := len(committed) - len(before)
	mu.Unlock()
	close(stop)
	wg.Wait()
	r.want(t, 0, "backed up")
	if writeErr != nil {
		t.Fatalf("the writer failed during the backup: %v", writeErr)
	}
	t.Logf("%d rows committed before the backup, %d while it ran", len(before), during)
	if info, err := os.Stat(file); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	// The proxy's lock still holds.
	if db, err := sqlite.Open(context.Background(), sqlite.Options{Path: path}); !errors.Is(err, sqlite.ErrInUse) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("after the backup a second Open = %v, want ErrInUse", err)
	}
	// Backing up onto an existing file is refused.
	migrate(t, dbURL, "backup", "--to", file).want(t, 1)

	// Restore refuses while the database is held, and changes nothing.
	liveRows := len(usageIDs(t, path))
	r = migrate(t, dbURL, "restore", "--from", file)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "stop the proxy first") {
		t.Errorf("restore while held: %s", r.stderr)
	}
	if n := len(usageIDs(t, path)); n != liveRows {
		t.Fatalf("a refused restore changed the database: %d rows, had %d", n, liveRows)
	}

	// Stopped, the database is replaced by the backup; a stale WAL of the
	// old database is not applied to it.
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-wal", []byte("stale wal of the old database"), 0o600); err != nil {
		t.Fatal(err)
	}
	migrate(t, dbURL, "restore", "--from", file).want(t, 0, "restored", "schema version")
	if _, err := os.Stat(path + "-wal"); !os.IsNotExist(err) {
		t.Errorf("restore left the old -wal file: %v", err)
	}
	got := usageIDs(t, path)
	for _, id := range before {
		if !got[id] {
			t.Fatalf("usage row %s, committed before the backup began, is missing after restore (%d rows restored, %d committed before)",
				id, len(got), len(before))
		}
	}
	if len(got) > len(before)+during {
		t.Fatalf("restored %d rows, more than were ever committed (%d)", len(got), len(before)+during)
	}
	migrate(t, dbURL, "current").want(t, 0, fmt.Sprintf("version %d (clean)", latest(t, schema.DriverSQLite)))
}

func TestRestoreRefusesABadBackup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.db")
	dbURL := "sqlite:///" + path
	migrate(t, dbURL, "up").want(t, 0)
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{garbage, empty, filepath.Join(dir, "missing.db")} {
		r := migrate(t, dbURL, "restore", "--from", file)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "not usable") {
			t.Errorf("restore --from %s: %s", filepath.Base(file), r.stderr)
		}
	}
	migrate(t, dbURL, "current").want(t, 0, "clean")
}

func TestPostgresBackupPrintsPgDump(t *testing.T) {
	t.Parallel()
	dbURL := "postgres://u:" + password + "@db.example:5432/proxy?sslmode=require"
	migrate(t, dbURL, "backup", "--to", "proxy.dump").want(t, 0, "pg_dump --format=custom --file=proxy.dump 'postgres://u:***@db.example:5432/proxy?sslmode=require'", "pg_restore")
	r := migrate(t, dbURL, "restore", "--from", "proxy.dump")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "pg_restore") {
		t.Errorf("restore on PostgreSQL does not point to pg_restore: %s", r.stderr)
	}
}
