// Package teststore opens real, migrated stores for the tests of packages
// that build on store.Store. It is imported only by tests.
package teststore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// Migrate applies every migration of driver to dsn.
func Migrate(t testing.TB, driver, dsn string) {
	t.Helper()
	ctx := context.Background()
	m, err := schema.New(ctx, driver, dsn, nil)
	if err != nil {
		t.Fatalf("schema.New: %v", err)
	}
	if err := m.Up(ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("close migrator: %v", err)
	}
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
// (testenv.PostgresURL), for tests that open several stores on it.
func PostgresURL(t testing.TB) string {
	t.Helper()
	url := testenv.PostgresURL(t)
	Migrate(t, schema.DriverPostgres, url)
	return url
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
