package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/store/storetest"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// openMigrated migrates a fresh database at path and opens the store on it.
func openMigrated(t *testing.T, path string, opts sqlite.Options) *sqlite.DB {
	t.Helper()
	ctx := t.Context()
	teststore.Migrate(t, schema.DriverSQLite, path)
	opts.Path = path
	db, err := sqlite.Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return openMigrated(t, testenv.SQLitePath(t), sqlite.Options{})
	})
}

func TestFileModes(t *testing.T) {
	t.Parallel()
	path := testenv.SQLitePath(t)
	db, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if err := db.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	tests := []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Dir(path), os.ModeDir | 0o700},
		{path, 0o600},
		{path + "-wal", 0o600},
		{path + "-shm", 0o600},
		{path + ".lock", 0o600},
	}
	for _, tc := range tests {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Errorf("stat %s: %v", tc.path, err)
			continue
		}
		if fi.Mode() != tc.mode {
			t.Errorf("mode of %s = %v, want %v", filepath.Base(tc.path), fi.Mode(), tc.mode)
		}
	}
}

func TestInUse(t *testing.T) {
	t.Parallel()
	path := testenv.SQLitePath(t)
	first, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	second, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
	if !errors.Is(err, sqlite.ErrInUse) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open: error %v, want ErrInUse", err)
	}
	for _, want := range []string{path, "PostgreSQL", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	third, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := third.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestMemory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := sqlite.Open(ctx, sqlite.Options{Path: ":memory:"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if st := db.Stats(); st.MaxConns != 1 {
		t.Errorf("Stats().MaxConns = %d, want 1 (reads share the writer)", st.MaxConns)
	}
	// Without a schema the store reports the missing table rather than an
	// empty result: reader and writer are one database.
	if _, err := db.GetProject(ctx, "x"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetProject on an unmigrated database: %v, want a missing-table error", err)
	}
	// The migrator reaches the same in-memory database through SchemaDSN.
	m, err := schema.New(ctx, schema.DriverSQLite, db.SchemaDSN(), nil)
	if err != nil {
		t.Fatalf("schema.New: %v", err)
	}
	if err := m.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("migrator Close: %v", err)
	}
	if _, err := db.GetProject(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetProject after migrating through SchemaDSN: %v, want ErrNotFound", err)
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	db := openMigrated(t, testenv.SQLitePath(t), sqlite.Options{Echo: true, Logger: logger})
	const secret = "deadbeefsecrethash"
	if _, _, err := db.GetTokenAndProjectByHash(context.Background(), secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetTokenAndProjectByHash: %v, want ErrNotFound", err)
	}
	out := buf.String()
	for _, want := range []string{`"msg":"sql"`, "WHERE t.token_hash = ?", `"duration_ms":`} {
		if !strings.Contains(out, want) {
			t.Errorf("echo log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Errorf("echo log contains an argument value:\n%s", out)
	}
}
