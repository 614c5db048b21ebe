package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

const testEncryptionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // base64 of 32 bytes

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode, string(b)
}

func TestFreshStartOnSQLiteWithNoConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startBinary(t, dir)
	if code, body := get(t, p.addr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	for _, alias := range []string{"/healthz", "/live", "/ready", "/health"} {
		if code, _ := get(t, p.addr+alias); code != http.StatusOK {
			t.Errorf("%s = %d", alias, code)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "var", "db", "proxy.db"))
	if err != nil {
		t.Fatalf("database file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("database file mode = %o, want 600", st.Mode().Perm())
	}
	dst, err := os.Stat(filepath.Join(dir, "var", "db"))
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("database directory mode = %o, want 700", dst.Mode().Perm())
	}
	code, body := get(t, p.addr+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `database_connections_total{driver="sqlite"}`) ||
		!strings.Contains(body, "database_busy_waits_total") {
		t.Errorf("/metrics lacks SQLite pool figures (status %d):\n%.2000s", code, body)
	}

	// A second process on the same file refuses to start and says why.
	second, out := runBinary(t, dir, []string{"LISTEN_ADDR=127.0.0.1:0"})
	if second == 0 || !strings.Contains(out, "PostgreSQL") {
		t.Errorf("second proxy on the same SQLite file: exit %d, output:\n%s", second, out)
	}
}

// pgURL rewrites a test database URL into another accepted form with a
// password (ignored by the trust-auth test server) that must never be shown.
func pgURL(t *testing.T, raw, scheme string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = scheme
	name := "postgres"
	if u.User != nil && u.User.Username() != "" {
		name = u.User.Username()
	}
	u.User = url.UserPassword(name, "s3cretPW")
	return u.String()
}

func TestPostgresURLFormsReachPostgresAndAreMasked(t *testing.T) {
	t.Parallel()
	base := testenv.PostgresURL(t)
	for _, scheme := range []string{"postgresql+asyncpg", "postgresql", "postgres"} {
		t.Run(scheme, func(t *testing.T) {
			p := startProxy(t, t.TempDir(), "DATABASE_URL="+pgURL(t, base, scheme), "ENCRYPTION_KEY="+testEncryptionKey)
			if code, body := get(t, p.addr+"/readyz"); code != http.StatusOK {
				t.Fatalf("/readyz = %d %s", code, body)
			}
			code, body := get(t, p.addr+"/metrics")
			if code != http.StatusOK || !strings.Contains(body, `database_connections_max{driver="postgres"} 15`) ||
				!strings.Contains(body, "database_acquire_total") {
				t.Errorf("/metrics lacks PostgreSQL pool figures:\n%.2000s", body)
			}
			p.stop(t)
			out := p.output.String()
			if strings.Contains(out, "s3cretPW") {
				t.Errorf("password appears in the output:\n%s", out)
			}
			if !strings.Contains(out, ":***@") {
				t.Errorf("start-up log does not show the masked URL:\n%s", out)
			}
		})
	}
}

// latestVersion is "version N" for this build's schema version.
func latestVersion(t *testing.T) string {
	t.Helper()
	v, err := schema.Latest(schema.DriverPostgres)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("version %d", v)
}

func TestAutoMigrateFalseRefusesAnEmptyDatabaseUntilMigrateUp(t *testing.T) {
	t.Parallel()
	db := testenv.PostgresURL(t)
	dir := t.TempDir()
	env := []string{"DATABASE_URL=" + db, "DATABASE_AUTO_MIGRATE=false", "ENCRYPTION_KEY=" + testEncryptionKey, "LISTEN_ADDR=127.0.0.1:0"}
	code, out := runBinary(t, dir, env)
	if code != 1 {
		t.Fatalf("proxy on an empty database with auto_migrate=false: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{"version 0", latestVersion(t), "migrate up"} {
		if !strings.Contains(out, want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	migrateDB(t, db, 0)
	p := startProxy(t, dir, env[:3]...)
	if code, body := get(t, p.addr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after migrate up = %d %s", code, body)
	}
}

func TestDirtySchemaRefusesToStart(t *testing.T) {
	t.Parallel()
	db := testenv.PostgresURL(t)
	dir := t.TempDir()
	migrateDB(t, db, 0)
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), "UPDATE schema_migrations SET dirty = true")
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	code, out := runBinary(t, dir, []string{"DATABASE_URL=" + db, "ENCRYPTION_KEY=" + testEncryptionKey, "LISTEN_ADDR=127.0.0.1:0"})
	if code != 1 {
		t.Fatalf("proxy on a dirty schema: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{"dirty", latestVersion(t), "migrate force"} {
		if !strings.Contains(out, want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
}

func TestBadConfigurationExits2NamingTheSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ env, want string }{
		{"DATABASE_POOL_SIZE=0", "DATABASE_POOL_SIZE"},
		{"DATABASE_POOL_SIZE=abc", "DATABASE_POOL_SIZE"},
		{"DATABASE_MAX_OVERFLOW=101", "DATABASE_MAX_OVERFLOW"},
		{"DATABASE_URL=mysql://x", "DATABASE_URL"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			code, out := runBinary(t, t.TempDir(), []string{tc.env, "LISTEN_ADDR=127.0.0.1:0"})
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit 2 naming %s", code, out, tc.want)
			}
		})
	}
	// All problems are reported in one pass.
	code, out := runBinary(t, t.TempDir(), []string{"DATABASE_POOL_SIZE=0", "DATABASE_MAX_OVERFLOW=101"})
	if code != 2 || !strings.Contains(out, "DATABASE_POOL_SIZE") || !strings.Contains(out, "DATABASE_MAX_OVERFLOW") {
		t.Errorf("two problems: exit %d, output:\n%s", code, out)
	}
}
