// Package teststore opens real, migrated stores for the tests of packages
// that build on store.Store. It is imported only by tests.
package teststore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// Migrate applies every migration of driver to dsn. A SQLite database
// file (a path, not a file: URI) that does not exist yet is written as a
// copy of one migrated once per test process (the migrations themselves,
// run by the same code, cost about 0.3 s per database under -race).
func Migrate(t testing.TB, driver, dsn string) {
	t.Helper()
	if driver == schema.DriverSQLite && !strings.HasPrefix(dsn, "file:") && !strings.HasPrefix(dsn, ":memory:") {
		if _, err := os.Stat(dsn); errors.Is(err, os.ErrNotExist) {
			if err := copySQLiteTemplate(dsn); err != nil {
				t.Fatalf("migrated SQLite database: %v", err)
			}
			return
		}
	}
	if err := migrate(context.Background(), driver, dsn); err != nil {
		t.Fatal(err)
	}
}

func migrate(ctx context.Context, driver, dsn string) error {
	m, err := schema.New(ctx, driver, dsn, nil)
	if err != nil {
		return fmt.Errorf("schema.New: %w", err)
	}
	if err := m.Up(ctx); err != nil {
		return errors.Join(fmt.Errorf("migrate up: %w", err), m.Close())
	}
	if err := m.Close(); err != nil {
		return fmt.Errorf("close migrator: %w", err)
	}
	return nil
}

// sqliteTemplate is the file of a freshly migrated SQLite database, made
// once per test process.
var sqliteTemplate = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "teststore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "template.db")
	if err := migrate(context.Background(), schema.DriverSQLite, path); err != nil {
		return nil, err
	}
	// The migrator has closed its connection, the last one: SQLite has
	// checkpointed the WAL into the file and removed it.
	if _, err := os.Stat(path + "-wal"); err == nil {
		return nil, fmt.Errorf("template %s still has a WAL after its last connection closed", path)
	}
	return os.ReadFile(path)
})

func copySQLiteTemplate(path string) error {
	b, err := sqliteTemplate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// SQLite returns a migrated SQLite store in a fresh temporary directory,
// closed at cleanup.
func SQLite(t testing.TB) *sqlite.DB {
	t.Helper()
	path := testenv.SQLitePath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	Migrate(t, schema.DriverSQLite, path)
	db, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// PostgresURL returns the URL of a fresh, migrated PostgreSQL database
// (testenv.MigratedPostgresURL), for tests that open several stores on it.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return testenv.MigratedPostgresURL(t)
}

// Postgres returns a store on a fresh, migrated PostgreSQL database, closed
// at cleanup.
func Postgres(t testing.TB) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), postgres.Options{URL: PostgresURL(t)})
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
