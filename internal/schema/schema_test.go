package schema_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	migrations "github.com/llmproxy/llm-proxy/db/migrations"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

var drivers = []string{schema.DriverSQLite, schema.DriverPostgres}

// fresh returns the DSN of a new empty database of driver and a raw handle
// to it for inspecting and tampering, closed at the end of the test.
func fresh(t *testing.T, driver string) (string, *sql.DB) {
	t.Helper()
	switch driver {
	case schema.DriverSQLite:
		dsn := t.TempDir() + "/test.db"
		return dsn, rawDB(t, "sqlite", dsn)
	case schema.DriverPostgres:
		dsn := testenv.PostgresURL(t)
		return dsn, rawDB(t, "pgx", dsn)
	}
	t.Fatalf("no driver %q", driver)
	return "", nil
}

// up migrates dsn to the latest version with a Migrator of its own.
func up(ctx context.Context, driver, dsn string) error {
	m, err := schema.New(ctx, driver, dsn, nil)
	if err != nil {
		return err
	}
	return errors.Join(m.Up(ctx), m.Close())
}

// upToDate is fresh, but at the latest version: for PostgreSQL a copy of
// a migrated template (testenv.MigratedPostgresURL; Up from empty has tests
// of its own: Walk, ConcurrentUp, Wait), for SQLite (whose migrations are
// cheap) migrated here.
func upToDate(t *testing.T, driver string) (string, *sql.DB) {
	t.Helper()
	if driver == schema.DriverPostgres {
		dsn := testenv.MigratedPostgresURL(t)
		return dsn, rawDB(t, "pgx", dsn)
	}
	dsn, db := fresh(t, driver)
	if err := up(t.Context(), driver, dsn); err != nil {
		t.Fatal(err)
	}
	return dsn, db
}

func rawDB(t *testing.T, sqlDriver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(sqlDriver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newMigrator(t *testing.T, driver, dsn string, logger *slog.Logger) *schema.Migrator {
	t.Helper()
	m, err := schema.New(context.Background(), driver, dsn, logger)
	if err != nil {
		t.Fatalf("new migrator: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close migrator: %v", err)
		}
	})
	return m
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

// previousVersion returns the embedded version before the latest (0 for
// none).
func previousVersion(t *testing.T, driver string) uint {
	t.Helper()
	vs := versions(t, driver)
	if len(vs) < 2 {
		return 0
	}
	return vs[len(vs)-2]
}

func wantStatus(t *testing.T, m *schema.Migrator, want schema.Status) {
	t.Helper()
	got, err := m.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if got != want {
		t.Fatalf("status = %+v, want %+v", got, want)
	}
}

func TestLatestMatchesAcrossDialects(t *testing.T) {
	t.Parallel()
	pg, sq := latest(t, schema.DriverPostgres), latest(t, schema.DriverSQLite)
	if pg != sq || pg == 0 {
		t.Fatalf("latest: postgres %d, sqlite %d; want equal and > 0", pg, sq)
	}
	if _, err := schema.Latest("mysql"); err == nil {
		t.Fatal("Latest(mysql) succeeded")
	}
}

func TestEveryMigrationHasDownFile(t *testing.T) {
	t.Parallel()
	for _, driver := range drivers {
		names, err := fs.Glob(migrations.FS, driver+"/*.sql")
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, n := range names {
			have[path.Base(n)] = true
		}
		ups := 0
		for n := range have {
			if base, ok := strings.CutSuffix(n, ".up.sql"); ok {
				ups++
				if !have[base+".down.sql"] {
					t.Errorf("%s/%s has no %s.down.sql", driver, n, base)
				}
			} else if base, ok := strings.CutSuffix(n, ".down.sql"); ok && !have[base+".up.sql"] {
				t.Errorf("%s/%s has no %s.up.sql", driver, n, base)
			}
		}
		if ups == 0 {
			t.Errorf("%s: no migrations found", driver)
		}
	}
}

// TestWalk applies everything, rolls back to nothing, re-applies, then walks
// every version down and up one step at a time, checking the version and
// that the schema comes back identical.
func TestWalk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			dsn, db := fresh(t, driver)
			m := newMigrator(t, driver, dsn, nil)
			top := latest(t, driver)
			wantStatus(t, m, schema.Status{Latest: top, None: true})

			if err := m.Up(ctx); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, m, schema.Status{Current: top, Latest: top})
			full := shapeOf(t, driver, db)
			if len(full) == 0 {
				t.Fatal("no tables after up")
			}
			if err := m.Up(ctx); err != nil {
				t.Fatalf("second up: %v", err)
			}

			if err := m.Goto(ctx, 0); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, m, schema.Status{Latest: top, None: true})
			if left := shapeOf(t, driver, db); len(left) != 0 {
				t.Fatalf("tables left after rolling everything back: %v", left)
			}
			if err := m.Up(ctx); err != nil {
				t.Fatal(err)
			}

			vs := versions(t, driver)
			for i := len(vs) - 1; i >= 0; i-- {
				if err := m.Down(ctx, 1); err != nil {
					t.Fatalf("down from %d: %v", vs[i], err)
				}
				var prev uint
				if i > 0 {
					prev = vs[i-1]
				}
				wantStatus(t, m, schema.Status{Current: prev, Latest: top, None: i == 0})
			}
			if err := m.Down(ctx, 1); err == nil {
				t.Fatal("down below version 0 succeeded")
			}
			for _, v := range vs {
				if err := m.Goto(ctx, v); err != nil {
					t.Fatalf("goto %d: %v", v, err)
				}
				wantStatus(t, m, schema.Status{Current: v, Latest: top})
			}
			if diff := cmp.Diff(full, shapeOf(t, driver, db)); diff != "" {
				t.Fatalf("schema differs after walking down and up (-first +now):\n%s", diff)
			}
		})
	}
}

func TestHistoryAndForce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			dsn, _ := fresh(t, driver)
			m := newMigrator(t, driver, dsn, nil)
			top := latest(t, driver)
			if err := m.Goto(ctx, 1); err != nil {
				t.Fatal(err)
			}
			hist, err := m.History(ctx)
			if err != nil {
				t.Fatal(err)
			}
			vs := versions(t, driver)
			if len(hist) != len(vs) || vs[len(vs)-1] != top {
				t.Fatalf("history has %d entries, want %d up to %d", len(hist), len(vs), top)
			}
			for i, h := range hist {
				if h.Version != vs[i] || h.Name == "" || h.Applied != (h.Version == 1) {
					t.Errorf("history[%d] = %+v, want version %d named, applied=%t", i, h, vs[i], h.Version == 1)
				}
			}
			if hist[0].Name != "create_core" {
				t.Errorf("history[0].Name = %q, want create_core", hist[0].Name)
			}

			if err := m.Force(ctx, int(top)); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, m, schema.Status{Current: top, Latest: top})
			if err := m.Force(ctx, -1); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, m, schema.Status{Latest: top, None: true})
			if err := m.Force(ctx, -2); err == nil {
				t.Fatal("force -2 succeeded")
			}
			if err := m.Down(ctx, 0); err == nil {
				t.Fatal("down 0 succeeded")
			}
		})
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type state func(t *testing.T, m *schema.Migrator, db *sql.DB)
	nothing := func(*testing.T, *schema.Migrator, *sql.DB) {}
	exec := func(query string, args ...any) state {
		return func(t *testing.T, _ *schema.Migrator, db *sql.DB) {
			if _, err := db.Exec(query, args...); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, driver := range drivers {
		top := latest(t, driver)
		for _, tc := range []struct {
			name       string
			upToDate   bool // start at the latest version, else empty
			state      state
			auto       bool
			wantErr    []string // substrings of the *SchemaError; none: Check returns nil
			wantLog    string
			wantStatus schema.Status
		}{
			{
				name:       "current",
				upToDate:   true,
				state:      nothing,
				wantStatus: schema.Status{Current: top, Latest: top},
			},
			{
				name:       "behind auto-migrate",
				state:      nothing,
				auto:       true,
				wantStatus: schema.Status{Current: top, Latest: top},
			},
			{
				name:       "empty no auto-migrate",
				state:      nothing,
				wantErr:    []string{"version 0 (none)", fmt.Sprintf("needs version %d", top), "`migrate up`", "DATABASE_AUTO_MIGRATE=true"},
				wantStatus: schema.Status{Latest: top, None: true},
			},
			{
				name: "behind no auto-migrate",
				state: func(t *testing.T, m *schema.Migrator, _ *sql.DB) {
					if err := m.Goto(ctx, 1); err != nil {
						t.Fatal(err)
					}
				},
				wantErr:    []string{"at version 1,", fmt.Sprintf("needs version %d", top), "`migrate up`"},
				wantStatus: schema.Status{Current: 1, Latest: top},
			},
			{
				name:     "dirty",
				upToDate: true,
				state:    exec("UPDATE schema_migrations SET dirty = true"),
				auto:     true,
				wantErr: []string{
					fmt.Sprintf("dirty at version %d", top),
					fmt.Sprintf("`migrate force %d`", top),
					fmt.Sprintf("`migrate force %d` followed by `migrate up`", previousVersion(t, driver)),
				},
				wantStatus: schema.Status{Current: top, Dirty: true, Latest: top},
			},
			{
				name:       "newer",
				upToDate:   true,
				state:      exec("UPDATE schema_migrations SET version = 99"),
				wantLog:    fmt.Sprintf("schema version 99 is newer than this build knows (%d); serving", top),
				wantStatus: schema.Status{Current: 99, Latest: top},
			},
		} {
			t.Run(driver+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				open := fresh
				if tc.upToDate {
					open = upToDate
				}
				dsn, db := open(t, driver)
				var logs bytes.Buffer
				m := newMigrator(t, driver, dsn, slog.New(slog.NewTextHandler(&logs, nil)))
				tc.state(t, m, db)

				err := m.Check(ctx, tc.auto)
				if len(tc.wantErr) == 0 && err != nil {
					t.Fatalf("check: %v", err)
				}
				if len(tc.wantErr) > 0 {
					var se *schema.SchemaError
					if !errors.As(err, &se) {
						t.Fatalf("check = %v, want *SchemaError", err)
					}
					for _, s := range tc.wantErr {
						if !strings.Contains(err.Error(), s) {
							t.Errorf("message %q lacks %q", err, s)
						}
					}
				}
				if !strings.Contains(logs.String(), tc.wantLog) {
					t.Errorf("logs %q lack %q", logs.String(), tc.wantLog)
				}
				wantStatus(t, m, tc.wantStatus)
			})
		}
	}
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			dsn, _ := fresh(t, driver)
			m := newMigrator(t, driver, dsn, nil)
			start := time.Now()
			err := m.Wait(ctx, 1500*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), "version 0 (none)") {
				t.Fatalf("wait on empty schema = %v, want timeout naming version 0 (none)", err)
			}
			if time.Since(start) < time.Second {
				t.Fatalf("wait gave up after %s, before its timeout", time.Since(start))
			}
			if err := m.Up(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.Wait(ctx, time.Second); err != nil {
				t.Fatalf("wait on current schema: %v", err)
			}
		})
	}
}

func TestWaitSeesAnotherMigrator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn, _ := fresh(t, schema.DriverPostgres)
	waiter := newMigrator(t, schema.DriverPostgres, dsn, nil)
	upper := newMigrator(t, schema.DriverPostgres, dsn, nil)
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		time.Sleep(300 * time.Millisecond)
		upErr = upper.Up(ctx)
	})
	err := waiter.Wait(ctx, 10*time.Second)
	wg.Wait()
	if upErr != nil {
		t.Fatal(upErr)
	}
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
}

// TestConcurrentUp starts three Migrators (three connections, as three
// `migrate up` processes would have) on one empty PostgreSQL database at
// once: each migration must be applied exactly once (a second application
// would fail on CREATE TABLE) and all must succeed.
func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn, db := fresh(t, schema.DriverPostgres)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			m, err := schema.New(ctx, schema.DriverPostgres, dsn, nil)
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = errors.Join(m.Up(ctx), m.Close())
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
	top := latest(t, schema.DriverPostgres)
	wantStatus(t, newMigrator(t, schema.DriverPostgres, dsn, nil), schema.Status{Current: top, Latest: top})
	var rows int
	if err := db.QueryRow("SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("schema_migrations rows = %d, %v; want 1", rows, err)
	}
}

func TestConnectWaitsForDatabase(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresURL(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	// Reserve a port, free it, and only start forwarding to PostgreSQL on it
	// after Connect has begun retrying.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	u.Host = addr

	var logs bytes.Buffer
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := make(chan struct{})
	defer close(stop)
	wg.Go(func() {
		time.Sleep(1200 * time.Millisecond)
		forward(t, &wg, stop, addr, target)
	})

	m, err := schema.Connect(context.Background(), schema.DriverPostgres, u.String(), 20*time.Second,
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer m.Close()
	if !strings.Contains(logs.String(), "database not ready, retrying") {
		t.Errorf("no retry logged: %q", logs.String())
	}
	if err := m.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestConnectFailsFast(t *testing.T) {
	for _, tc := range []struct{ name, driver, dsn string }{
		{"unknown driver", "mysql", "mysql://x"},
		{"bad url", schema.DriverPostgres, "postgres://u:pw@host:notaport/db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := schema.Connect(context.Background(), tc.driver, tc.dsn, 30*time.Second, nil)
			if err == nil {
				t.Fatal("connect succeeded")
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("connect retried a permanent error for %s", time.Since(start))
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Fatalf("error reveals the password: %v", err)
			}
		})
	}
}

func TestConnectGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = schema.Connect(context.Background(), schema.DriverPostgres, "postgres://u@"+addr+"/db", 1500*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "database not ready after 1.5s") {
		t.Fatalf("connect = %v, want giving up after 1.5s", err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Fatalf("connect gave up after %s, want about 1.5s", d)
	}
}

// forward listens on addr and relays every connection to target until stop
// is closed; wg owns the goroutines.
func forward(t *testing.T, wg *sync.WaitGroup, stop <-chan struct{}, addr, target string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("listen on reserved port: %v", err)
		return
	}
	wg.Go(func() {
		<-stop
		l.Close()
	})
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		wg.Go(func() {
			<-stop
			c.Close()
			up.Close()
		})
		wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
	}
}

func TestDirtySchemaBlocksChangesUntilForced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			dsn, db := fresh(t, driver)
			m := newMigrator(t, driver, dsn, nil)
			if err := m.Goto(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec("UPDATE schema_migrations SET dirty = true"); err != nil {
				t.Fatal(err)
			}
			for name, op := range map[string]func() error{
				"up":   func() error { return m.Up(ctx) },
				"down": func() error { return m.Down(ctx, 1) },
				"goto": func() error { return m.Goto(ctx, 2) },
			} {
				err := op()
				var se *schema.SchemaError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), "`migrate force 1`") {
					t.Errorf("%s on dirty schema = %v, want *SchemaError with the force command", name, err)
				}
			}
			if err := m.Force(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if err := m.Up(ctx); err != nil {
				t.Fatalf("up after force: %v", err)
			}
		})
	}
}
