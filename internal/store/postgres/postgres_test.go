package postgres

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/storetest"
	"github.com/llmproxy/llm-proxy/internal/testkit/syncbuf"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// migratedURL returns the URL of a fresh, migrated database.
func migratedURL(t *testing.T) string {
	t.Helper()
	return testenv.MigratedPostgresURL(t)
}

func open(t *testing.T, opts Options) *DB {
	t.Helper()
	db, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, Options{URL: migratedURL(t), PoolSize: 2, MaxOverflow: 4, MaxIdleConns: 2})
	})
}

func TestPoolExhausted(t *testing.T) {
	db := open(t, Options{URL: migratedURL(t), PoolSize: 1, MaxOverflow: 0, PoolTimeout: time.Second, MaxIdleConns: 1})
	held, err := db.Pool().Acquire(t.Context())
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	defer held.Release()

	start := time.Now()
	_, err = db.GetProject(t.Context(), uuid.NewString())
	waited := time.Since(start)
	if !errors.Is(err, store.ErrPoolExhausted) {
		t.Fatalf("GetProject with a full pool: error %v, want ErrPoolExhausted", err)
	}
	const want = "database pool exhausted (waited 1s; pool_size=1, max_overflow=0)"
	if err.Error() != want {
		t.Errorf("error text %q, want %q", err.Error(), want)
	}
	if waited < 900*time.Millisecond || waited > 3*time.Second {
		t.Errorf("gave up after %s, want about 1s", waited)
	}
	if got := db.Stats().ExhaustedErrs; got != 1 {
		t.Errorf("Stats().ExhaustedErrs = %d, want 1", got)
	}

	// The caller's own deadline ending first is not pool exhaustion.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err = db.Ping(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrPoolExhausted) {
		t.Errorf("Ping with a short caller deadline: error %v, want context.DeadlineExceeded only", err)
	}
	if got := db.Stats().ExhaustedErrs; got != 1 {
		t.Errorf("Stats().ExhaustedErrs after caller timeout = %d, want 1", got)
	}

	held.Release()
	if err := db.Ping(t.Context()); err != nil {
		t.Errorf("Ping after release: %v", err)
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	var logs syncbuf.Buffer
	db := open(t, Options{
		URL: migratedURL(t), PoolSize: 1, MaxIdleConns: 1, Echo: true, EchoPool: true,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	const secretName = "argument-value-7f3a9c"
	p := &store.Project{
		ID: uuid.NewString(), Name: secretName, Provider: store.ProviderOpenAI, BaseURL: "https://api.openai.com/v1",
		APIKeyEncrypted: []byte("ciphertext"), IsActive: true, CreatedAt: time.Now(), UpdatedAt: time.Now(),
	}
	if err := db.CreateProject(t.Context(), p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	if _, err := db.GetProjectByName(t.Context(), secretName); err != nil {
		t.Fatalf("GetProjectByName: %v", err)
	}
	if err := db.CreateProject(t.Context(), p); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateProject duplicate: %v, want ErrConflict", err)
	}
	u := store.Usage{ID: uuid.NewString(), CreatedAt: time.Now(), RequestID: "req-" + secretName, Endpoint: "/v1/chat/completions", Status: 200}
	if err := db.InsertUsage(t.Context(), []store.Usage{u}); err != nil {
		t.Fatalf("InsertUsage: %v", err)
	}

	out := logs.String()
	for _, want := range []string{
		"msg=sql", "INSERT INTO projects", "FROM projects WHERE name = $1", "duration_ms=",
		"sqlstate=23505", "COPY", "event=connect", "event=acquire", "event=release",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("echo log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secretName) {
		t.Errorf("echo log contains an argument value %q:\n%s", secretName, out)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()

	start := time.Now()
	db, err := Open(t.Context(), Options{
		URL:         "postgres://app:hunter2-password@127.0.0.1:" + port + "/proxy?sslmode=disable",
		PoolTimeout: 10 * time.Second,
	})
	if err == nil {
		db.Close()
		t.Fatal("Open of a closed port succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open took %s to fail, want prompt", d)
	}
	for _, want := range []string{"connect to database", "127.0.0.1:" + port} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q reveals the password", err)
	}
}

func TestOpenInvalidOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"bad url", Options{URL: "postgres://%zz"}},
		{"negative overflow", Options{URL: "postgres://127.0.0.1/x", MaxOverflow: -1}},
		{"negative pool size", Options{URL: "postgres://127.0.0.1/x", PoolSize: -1}},
	}
	for _, tc := range tests {
		if db, err := Open(t.Context(), tc.opts); err == nil {
			db.Close()
			t.Errorf("%s: Open succeeded", tc.name)
		}
	}
}

func TestPoolSizing(t *testing.T) {
	t.Parallel()
	db := open(t, Options{URL: migratedURL(t), PoolSize: 3, MaxOverflow: 2, MaxIdleConns: 2})
	cfg := db.Pool().Config()
	if cfg.MaxConns != 5 || cfg.MinConns != 2 || cfg.MaxConnIdleTime != overflowIdleTime || cfg.MaxConnLifetime != DefaultConnMaxLifetime {
		t.Errorf("pool config MaxConns=%d MinConns=%d MaxConnIdleTime=%s MaxConnLifetime=%s; want 5, 2, %s, %s",
			cfg.MaxConns, cfg.MinConns, cfg.MaxConnIdleTime, cfg.MaxConnLifetime, overflowIdleTime, DefaultConnMaxLifetime)
	}
	if got := db.Stats().MaxConns; got != 5 {
		t.Errorf("Stats().MaxConns = %d, want 5", got)
	}
}

// TestMaxIdleConnsIsMinConns: DATABASE_MAX_IDLE_CONNS reaches pgxpool as
// MinConns whole, above the pool size too, and a value the pool could
// never hold is refused rather than cut.
func TestMaxIdleConnsIsMinConns(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	db := open(t, Options{URL: url, PoolSize: 2, MaxOverflow: 4, MaxIdleConns: 5})
	if cfg := db.Pool().Config(); cfg.MinConns != 5 || cfg.MaxConns != 6 {
		t.Errorf("MinConns %d MaxConns %d, want 5 and 6", cfg.MinConns, cfg.MaxConns)
	}
	if _, err := Open(t.Context(), Options{URL: url, PoolSize: 2, MaxOverflow: 4, MaxIdleConns: 7}); err == nil || !strings.Contains(err.Error(), "max_idle_conns=7") {
		t.Errorf("MaxIdleConns above pool_size+max_overflow: %v, want an error naming it", err)
	}
}
