package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/schema"
)

func newProbe(t *testing.T, driver, dsn string, interval time.Duration) *schema.Probe {
	t.Helper()
	p, err := schema.NewProbe(driver, dsn, interval)
	if err != nil {
		t.Fatalf("new probe: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close probe: %v", err)
		}
	})
	return p
}

func wantProbe(t *testing.T, p *schema.Probe, want schema.Status) {
	t.Helper()
	got, err := p.Status(context.Background())
	if err != nil {
		t.Fatalf("probe status: %v", err)
	}
	if got != want {
		t.Fatalf("probe status = %+v, want %+v", got, want)
	}
}

// TestProbeSeesChangesAfterStartUp follows a schema through the changes an
// operator can make under a running proxy; a probe that re-reads every time
// sees each, one with a long interval keeps its first reading.
func TestProbeSeesChangesAfterStartUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			top := latest(t, driver)
			dsn, db := upToDate(t, driver)
			m := newMigrator(t, driver, dsn, nil)
			every := newProbe(t, driver, dsn, 0)
			cached := newProbe(t, driver, dsn, time.Hour)
			current := schema.Status{Current: top, Latest: top}
			wantProbe(t, every, current)
			wantProbe(t, cached, current)

			if err := m.Down(ctx, 1); err != nil {
				t.Fatal(err)
			}
			wantProbe(t, every, schema.Status{Current: previousVersion(t, driver), Latest: top})
			wantProbe(t, cached, current)

			if _, err := db.Exec(fmt.Sprintf("UPDATE schema_migrations SET version = %d, dirty = true", top)); err != nil {
				t.Fatal(err)
			}
			wantProbe(t, every, schema.Status{Current: top, Dirty: true, Latest: top})

			if err := m.Goto(ctx, 0); err == nil {
				t.Fatal("goto 0 on a dirty schema succeeded")
			}
			if err := m.Force(ctx, 0); err != nil {
				t.Fatal(err)
			}
			wantProbe(t, every, schema.Status{Latest: top, None: true})
		})
	}
}

func TestProbeReportsAnUnreachableDatabase(t *testing.T) {
	t.Parallel()
	p := newProbe(t, schema.DriverPostgres, "postgres://u@127.0.0.1:1/db?connect_timeout=1", 0)
	if _, err := p.Status(context.Background()); err == nil {
		t.Fatal("status of an unreachable database: no error")
	}
}
