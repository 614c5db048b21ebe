// Package testenv gives tests real PostgreSQL databases and Redis key
// prefixes of their own. It is imported only by tests.
//
// The servers come from TEST_DATABASE_URL and TEST_REDIS_URL (set by
// .ci/test, which starts throwaway servers when they are unset). Without
// them a test is skipped, except under CI=true, where it fails.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func unavailable(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: CI needs a real server (run the tests with .ci/test)", what)
	}
	t.Skipf("%s is not set; run the tests with .ci/test to start throwaway servers", what)
}

// Name returns a short random identifier usable as a database name or key
// prefix.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// PostgresURL creates a new empty database for the test and returns its URL
// (postgres://...). The database is dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		unavailable(t, "TEST_DATABASE_URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to TEST_DATABASE_URL: %v", err)
	}
	defer conn.Close(context.Background())
	name := Name("t_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parse TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis returns the Redis URL and a key prefix unique to this test
// ("t_xxxxxxxxxxxx:"). Keys under the prefix are not cleaned up: tests give
// them short TTLs or rely on the throwaway server.
func Redis(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	u := os.Getenv("TEST_REDIS_URL")
	if u == "" {
		unavailable(t, "TEST_REDIS_URL")
	}
	return u, Name("t_") + ":"
}

// SQLitePath returns a database file path in a fresh temporary directory.
func SQLitePath(t testing.TB) string {
	t.Helper()
	return strings.TrimRight(t.TempDir(), "/") + "/db/proxy.db"
}

// String renders the variables a test needs, for failure messages.
func String() string {
	return fmt.Sprintf("TEST_DATABASE_URL set=%t TEST_REDIS_URL set=%t CI=%q",
		os.Getenv("TEST_DATABASE_URL") != "", os.Getenv("TEST_REDIS_URL") != "", os.Getenv("CI"))
}
