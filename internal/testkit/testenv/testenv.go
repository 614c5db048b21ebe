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
	"strconv"
	"strings"
	"sync"
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

// PostgresTemplate is a database prepared once per test process (by the
// function given to NewPostgresTemplate, e.g. one that applies every
// migration) and copied by PostgreSQL for each test that asks for one:
// CREATE DATABASE ... TEMPLATE costs a fraction of running the migrations
// again under -race. Its methods are safe for concurrent use.
//
// Nothing may stay connected to the template (PostgreSQL refuses to copy a
// database others are using), so prepare must close every connection it
// opens. The template is named tpl_<unix seconds>_<random>; a test process
// cannot drop it at exit, so each new template first drops those more than
// an hour old, which no test process is still using (.ci/test gives
// `go test` 25 minutes).
type PostgresTemplate struct {
	prepare func(ctx context.Context, url string) error
	name    func() (string, error)
}

// NewPostgresTemplate returns a template prepared, on first use, by calling
// prepare with the URL of a new empty database.
func NewPostgresTemplate(prepare func(ctx context.Context, url string) error) *PostgresTemplate {
	p := &PostgresTemplate{prepare: prepare}
	p.name = sync.OnceValues(p.create)
	return p
}

// templateMaxAge is how old a template must be before another test process
// drops it.
const templateMaxAge = time.Hour

func (p *PostgresTemplate) create() (string, error) {
	admin := os.Getenv("TEST_DATABASE_URL")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to TEST_DATABASE_URL: %w", err)
	}
	defer conn.Close(context.Background())
	dropStaleTemplates(ctx, conn, time.Now())
	name := fmt.Sprintf("tpl_%d_%s", time.Now().Unix(), Name(""))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create template database: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("parse TEST_DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	if err := p.prepare(ctx, u.String()); err != nil {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		return "", fmt.Errorf("prepare template database: %w", err)
	}
	return name, nil
}

// dropStaleTemplates drops the templates of earlier test processes (best
// effort: one still being copied is left for a later run).
func dropStaleTemplates(ctx context.Context, conn *pgx.Conn, now time.Time) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'tpl\_%'`)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		parts := strings.Split(name, "_")
		if len(parts) != 3 {
			continue
		}
		sec, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || now.Sub(time.Unix(sec, 0)) < templateMaxAge {
			continue
		}
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize())
	}
}

// URL creates a new database for the test as a copy of the template and
// returns its URL. The database is dropped when the test ends.
func (p *PostgresTemplate) URL(t testing.TB) string {
	t.Helper()
	if os.Getenv("TEST_DATABASE_URL") == "" {
		unavailable(t, "TEST_DATABASE_URL")
	}
	name, err := p.name()
	if err != nil {
		t.Fatalf("template database: %v", err)
	}
	return createDatabase(t, name)
}
