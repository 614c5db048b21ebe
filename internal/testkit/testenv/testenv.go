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
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	migrations "github.com/llmproxy/llm-proxy/db/migrations"
	"github.com/llmproxy/llm-proxy/internal/schema"
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
	return createDatabase(t, "")
}

// createDatabase creates a database for the test, a copy of template unless
// that is empty, and returns its URL. The database is dropped when the test
// ends.
func createDatabase(t testing.TB, template string) string {
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
	create := "CREATE DATABASE " + name
	if template != "" {
		create += " TEMPLATE " + template
	}
	if _, err := conn.Exec(ctx, create); err != nil {
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

// MigratedPostgresURL creates a new database at the latest schema version
// for the test and returns its URL; the database is dropped when the test
// ends. It is a copy (CREATE DATABASE ... TEMPLATE, a fraction of the cost
// of running every migration under -race) of a template database that the
// first test process of a run migrates and the others reuse.
//
// Templates are named tpl_<migrations hash>_<unix seconds>: a process
// reuses the newest one of its migrations made in the last templateReuse
// and otherwise migrates a new one, under an advisory lock so concurrent
// test processes migrate once. No test process can drop a template at exit,
// so each one, looking for a template, drops those older than
// templateMaxAge, which no test process can still be copying.
func MigratedPostgresURL(t testing.TB) string {
	t.Helper()
	if os.Getenv("TEST_DATABASE_URL") == "" {
		unavailable(t, "TEST_DATABASE_URL")
	}
	name, err := migratedTemplate()
	if err != nil {
		t.Fatalf("migrated template database: %v", err)
	}
	return createDatabase(t, name)
}

const (
	// templateReuse is how old a template may be for a new test process to
	// copy it: more than any one run takes, less than a day, so the
	// partitions the migrations create for the days ahead stay current.
	templateReuse = time.Hour
	// templateMaxAge is templateReuse plus more than `go test`'s timeout
	// in .ci/test (25 minutes): older templates are no longer copied.
	templateMaxAge = 2 * time.Hour
	// templateLock is the advisory lock key of template creation.
	templateLock = 0x6c6c6d7074706c // "llmptpl"
)

// migratedTemplate returns the name of the template database for this
// process, finding or making it on first use.
var migratedTemplate = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	key, err := migrationsHash()
	if err != nil {
		return "", err
	}
	admin := os.Getenv("TEST_DATABASE_URL")
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to TEST_DATABASE_URL: %w", err)
	}
	// Closing the connection releases the advisory lock.
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(templateLock)); err != nil {
		return "", fmt.Errorf("lock templates: %w", err)
	}
	now := time.Now()
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'tpl%'`)
	if err != nil {
		return "", fmt.Errorf("list templates: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("list templates: %w", err)
	}
	var reuse string
	var newest time.Time
	for _, name := range names {
		kind, hash, made, ok := parseTemplateName(name)
		switch {
		case !ok:
		case now.Sub(made) > templateMaxAge:
			// Best effort: a failed drop is retried by a later run.
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize())
		case kind == "tpl" && hash == key && now.Sub(made) < templateReuse && made.After(newest):
			reuse, newest = name, made
		}
	}
	if reuse != "" {
		return reuse, nil
	}
	// Migrated under a name no process copies, renamed once complete: a
	// process that dies half-way leaves nothing another would copy.
	stamp := fmt.Sprintf("%s_%d", key, now.Unix())
	tmp, name := "tpltmp_"+stamp, "tpl_"+stamp
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+tmp); err != nil {
		return "", fmt.Errorf("create template database: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("parse TEST_DATABASE_URL: %w", err)
	}
	u.Path = "/" + tmp
	if err := migrateUp(ctx, u.String()); err != nil {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+tmp+" WITH (FORCE)")
		return "", fmt.Errorf("migrate template database: %w", err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+tmp+" RENAME TO "+name); err != nil {
		return "", fmt.Errorf("rename template database: %w", err)
	}
	return name, nil
})

// migrateUp applies every PostgreSQL migration to the database at dsn and
// closes its connections.
func migrateUp(ctx context.Context, dsn string) error {
	m, err := schema.New(ctx, schema.DriverPostgres, dsn, nil)
	if err != nil {
		return err
	}
	return errors.Join(m.Up(ctx), m.Close())
}

// migrationsHash identifies the PostgreSQL migrations (names and contents),
// so a template is only reused for the schema it was migrated to.
func migrationsHash() (string, error) {
	files, err := fs.Glob(migrations.FS, "postgres/*.sql")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range files { // fs.Glob returns them sorted
		b, err := fs.ReadFile(migrations.FS, f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// parseTemplateName splits tpl_<hash>_<unix seconds> (or tpltmp_...).
func parseTemplateName(name string) (kind, hash string, made time.Time, ok bool) {
	parts := strings.Split(name, "_")
	if len(parts) != 3 || (parts[0] != "tpl" && parts[0] != "tpltmp") {
		return "", "", time.Time{}, false
	}
	sec, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return "", "", time.Time{}, false
	}
	return parts[0], parts[1], time.Unix(sec, 0), true
}
