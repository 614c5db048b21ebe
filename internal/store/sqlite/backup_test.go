package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// TestRestoreIncludesTheBackupsWAL restores from a database file whose
// last transactions are still in its -wal file (a database copied while
// open, or a backup still open elsewhere): the restored database holds
// every committed row, which a byte copy of the main file alone would
// lose, and it passes the integrity check.
func TestRestoreIncludesTheBackupsWAL(t *testing.T) {
	src := openMigrated(t, testenv.SQLitePath(t), sqlite.Options{})
	ctx := t.Context()
	const n = 50
	for i := range n {
		u := store.Usage{ID: uuid.NewString(), CreatedAt: time.Date(2025, 3, 10, 12, i, 0, 0, time.UTC),
			RequestID: "r", Endpoint: "/v1/chat/completions", Status: 200, TotalTokens: 2}
		if err := src.InsertUsage(ctx, []store.Usage{u}); err != nil {
			t.Fatalf("InsertUsage: %v", err)
		}
	}
	if fi, err := os.Stat(src.SchemaDSN() + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("the source's WAL is empty or missing (%v): the test needs rows there", err)
	}

	dst := testenv.SQLitePath(t)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	teststore.Migrate(t, schema.DriverSQLite, dst)
	if err := sqlite.Restore(ctx, dst, src.SchemaDSN()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if _, _, err := sqlite.Check(ctx, dst); err != nil {
		t.Fatalf("Check of the restored database: %v", err)
	}
	db, err := sqlite.Open(ctx, sqlite.Options{Path: dst})
	if err != nil {
		t.Fatalf("Open the restored database: %v", err)
	}
	defer db.Close()
	got, err := db.SumUsage(ctx, store.UsageFilter{})
	if err != nil {
		t.Fatalf("SumUsage: %v", err)
	}
	if got[0].Requests != n || got[0].TotalTokens != 2*n {
		t.Errorf("restored database sums %+v, want %d requests and %d tokens", got[0], n, 2*n)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
}
