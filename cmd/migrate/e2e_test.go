package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/testkit/binaries"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

const password = "s3cretpw"

// TestMain removes the binary TestBinary builds.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := binaries.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// TestBinary proves the built binary (as `make build` builds it) wires run
// to its exit statuses, streams and signals as the in-process runs assume.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := binaries.ForTest(t, false).Migrate
	exe := func(dbURL string, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(testEnviron(), "DATABASE_URL="+dbURL, "LOG_FORMAT=text")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := result{stdout: stdout.String(), stderr: stderr.String()}
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			r.code = exitErr.ExitCode()
		case err != nil:
			t.Fatalf("run migrate %v: %v", args, err)
		}
		return checked(t, args, r)
	}
	dbURL := postgresURL(t)
	exe(dbURL, "up").want(t, 0)
	exe(dbURL, "current").want(t, 0, fmt.Sprintf("version %d (clean)", latest(t, schema.DriverPostgres)))
	exe(dbURL, "help").want(t, 0, "Usage:\n  migrate <verb> [flags]")
	r := exe(dbURL, "sideways")
	r.want(t, 2)
	if !strings.Contains(r.stderr, "see: migrate help") {
		t.Errorf("usage error: stderr %q lacks the help hint", r.stderr)
	}
	r = exe("postgres://u:"+password+"@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", "up", "--wait", "0s")
	r.want(t, 1)
	if !strings.HasPrefix(r.stderr, "migrate: ") && !strings.Contains(r.stderr, "\nmigrate: ") {
		t.Errorf("failure: stderr %q lacks the migrate: error line", r.stderr)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// migrate runs migrate in-process (run, with main's error report and exit
// status) with DATABASE_URL=dbURL (unset when empty) and no other database
// settings from the test's environment. It is safe to call from several
// goroutines. TestBinary proves the built binary behaves the same.
func migrate(t *testing.T, dbURL string, args ...string) result {
	t.Helper()
	var env []string
	if dbURL != "" {
		env = append(env, "DATABASE_URL="+dbURL)
	}
	return migrateEnv(t, env, args...)
}

// migrateEnv runs migrate in-process with the variables env added to the
// test's environment, from which every database and key setting is removed.
func migrateEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	vars := map[string]string{}
	for _, kv := range append(append(testEnviron(), env...), "LOG_FORMAT=text") {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, func(k string) string { return vars[k] }, &stdout, &stderr)
	code := exitStatus(err, &stderr)
	return checked(t, args, result{code: code, stdout: stdout.String(), stderr: stderr.String()})
}

// testEnviron is the test's environment without any database or key
// setting.
func testEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_") && !strings.HasPrefix(kv, "DB_DRIVER=") && !strings.HasPrefix(kv, "CONFIG_FILE=") &&
			!strings.HasPrefix(kv, "ENCRYPTION_KEY=") && !strings.HasPrefix(kv, sourceKeyEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// checked fails t when migrate printed the test password.
func checked(t *testing.T, args []string, r result) result {
	t.Helper()
	if strings.Contains(r.stdout+r.stderr, password) {
		t.Errorf("migrate %v printed the password:\nstdout: %s\nstderr: %s", args, r.stdout, r.stderr)
	}
	return r
}

// want checks the exit code and that stdout contains each of wantOut.
func (r result) want(t *testing.T, code int, wantOut ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range wantOut {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout %q lacks %q (stderr: %s)", r.stdout, s, r.stderr)
		}
	}
}

// postgresURL is a fresh database's URL carrying a password (ignored by a
// server with trust authentication) to prove it is never printed.
func postgresURL(t *testing.T) string {
	t.Helper()
	return withPassword(t, testenv.PostgresURL(t))
}

// migratedPostgresURL is postgresURL of a database already at the latest
// version (teststore.PostgresURL).
func migratedPostgresURL(t *testing.T) string {
	t.Helper()
	return withPassword(t, teststore.PostgresURL(t))
}

func withPassword(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

func latest(t *testing.T, driver string) uint {
	t.Helper()
	v, err := schema.Latest(driver)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// versions returns the embedded versions of driver, ascending; numbers may
// skip (one can be reserved for a migration not merged yet).
func versions(t *testing.T, driver string) []uint {
	t.Helper()
	vs, err := schema.Versions(driver)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestPostgresConcurrentUpAndVerbs(t *testing.T) {
	t.Parallel()
	dbURL := postgresURL(t)
	top := latest(t, schema.DriverPostgres)
	current := fmt.Sprintf("version %d (clean)", top)

	results := make([]result, 3)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			results[i] = migrate(t, dbURL, "up")
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || !strings.Contains(r.stdout, current) {
			t.Fatalf("concurrent up %d: exit %d, stdout %q, stderr %s", i, r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "migrate: postgres://") || !strings.Contains(r.stderr, ":***@") {
			t.Errorf("up %d does not show the masked URL: %s", i, r.stderr)
		}
	}
	migrate(t, dbURL, "current").want(t, 0, current)

	vs := versions(t, schema.DriverPostgres)
	all := strconv.Itoa(len(vs))
	migrate(t, dbURL, "down", all).want(t, 0, "no migrations applied")
	migrate(t, dbURL, "history").want(t, 0, "create_core", "pending")
	if r := migrate(t, dbURL, "history"); strings.Contains(r.stdout, "applied") {
		t.Fatalf("history after down %s shows applied migrations:\n%s", all, r.stdout)
	}

	migrate(t, dbURL, "goto", "1").want(t, 0, "version 1 (clean)")
	hist := migrate(t, dbURL, "history")
	hist.want(t, 0)
	lines := strings.Split(strings.TrimSpace(hist.stdout), "\n")
	if len(lines) != len(vs) || !strings.HasSuffix(lines[0], "applied") || !strings.HasSuffix(lines[1], "pending") {
		t.Fatalf("history after goto 1:\n%s", hist.stdout)
	}

	// Simulate a migration that failed half way, then recover with force.
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "UPDATE schema_migrations SET dirty = true"); err != nil {
		t.Fatal(err)
	}
	migrate(t, dbURL, "current").want(t, 0, "version 1 (dirty)")
	if r := migrate(t, dbURL, "up"); r.code != 1 || !strings.Contains(r.stderr, "dirty at version 1") || !strings.Contains(r.stderr, "`migrate force 1`") {
		t.Fatalf("up on a dirty schema: exit %d, stderr %s", r.code, r.stderr)
	}
	migrate(t, dbURL, "force", "1").want(t, 0, "version 1 (clean)")
	migrate(t, dbURL, "up").want(t, 0, current)
	migrate(t, dbURL, "wait", "--timeout", "5s").want(t, 0, current)
}

func TestUsageAndConfigErrors(t *testing.T) {
	t.Parallel()
	sqliteURL := "sqlite:///" + filepath.Join(t.TempDir(), "x.db")
	for _, tc := range []struct {
		name      string
		dbURL     string
		args      []string
		code      int
		wantErr   string
		wantOut   string
		forbidOut []string
	}{
		{name: "no verb", dbURL: sqliteURL, code: 2, wantErr: "no verb"},
		{name: "unknown verb", dbURL: sqliteURL, args: []string{"sideways"}, code: 2, wantErr: `unknown verb "sideways"`},
		{name: "bad down count", dbURL: sqliteURL, args: []string{"down", "x"}, code: 2, wantErr: "positive number"},
		{name: "zero down count", dbURL: sqliteURL, args: []string{"down", "0"}, code: 2, wantErr: "positive number"},
		{name: "goto without version", dbURL: sqliteURL, args: []string{"goto"}, code: 2, wantErr: "goto takes"},
		{name: "extra argument", dbURL: sqliteURL, args: []string{"current", "now"}, code: 2, wantErr: "current takes"},
		{name: "flag of another verb", dbURL: sqliteURL, args: []string{"current", "--wait", "5s"}, code: 2, wantErr: "--wait does not apply to current"},
		{name: "unknown flag", dbURL: sqliteURL, args: []string{"up", "--bogus"}, code: 2, wantErr: "bogus"},
		{name: "mysql url", dbURL: "mysql://u:" + password + "@x/db", args: []string{"up"}, code: 2, wantErr: "DATABASE_URL"},
		{
			name: "help", args: []string{"help"}, code: 0,
			wantOut: "copy --from URL --to URL", forbidOut: []string{"Usage: migrate [flags]"},
		},
		{name: "dash h", args: []string{"-h"}, code: 0, wantOut: "down [N]"},
		{name: "unreachable postgres fails", dbURL: "postgres://u:" + password + "@127.0.0.1:1/db?sslmode=disable", args: []string{"current"}, code: 1, wantErr: "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := migrate(t, tc.dbURL, tc.args...)
			r.want(t, tc.code, tc.wantOut)
			if !strings.Contains(r.stderr, tc.wantErr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.wantErr)
			}
			for _, s := range tc.forbidOut {
				if strings.Contains(r.stdout, s) {
					t.Errorf("stdout mentions %q:\n%s", s, r.stdout)
				}
			}
		})
	}
}

func TestSQLiteUpCreatesDatabase(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "var", "db")
	path := filepath.Join(dir, "proxy.db")
	dbURL := "sqlite:///" + path
	top := latest(t, schema.DriverSQLite)
	current := fmt.Sprintf("version %d (clean)", top)

	migrate(t, dbURL, "current").want(t, 0, "no migrations applied")
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700}, {path, 0o600}} {
		info, err := os.Stat(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != p.mode {
			t.Errorf("%s has mode %v, want %v", p.path, got, p.mode)
		}
	}
	migrate(t, dbURL, "up").want(t, 0, current)
	migrate(t, dbURL, "current").want(t, 0, current)
	vs := versions(t, schema.DriverSQLite)
	migrate(t, dbURL, "down").want(t, 0, fmt.Sprintf("version %d (clean)", vs[len(vs)-2]))
	migrate(t, dbURL, "wait", "--timeout", "1s").want(t, 1)
	migrate(t, dbURL, "up", "--wait", "1s").want(t, 0, current)
}
