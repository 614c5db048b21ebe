package schema

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/source"

	migrations "github.com/llmproxy/llm-proxy/db/migrations"
)

// Migration is one embedded migration and whether the database has it.
type Migration struct {
	Version uint
	Name    string // the file name's verb_noun part, e.g. "create_core"
	Applied bool
}

// Status is the schema state of a database as recorded by golang-migrate.
type Status struct {
	Current uint // the recorded version; 0 when None
	Dirty   bool // a migration to Current failed half way
	Latest  uint // the highest version embedded in this build
	None    bool // no migration applied yet
}

// SchemaError reports a schema the proxy must not serve on (behind without
// auto-migration, or dirty). Its message tells the operator what to run.
type SchemaError struct {
	Status Status
	// Driver names the dialect, whose embedded versions tell the version
	// before a dirty one (numbers may skip: one can be reserved for a
	// migration that is not merged yet).
	Driver string
}

func (e *SchemaError) Error() string {
	s := e.Status
	if s.Dirty {
		if s.None || s.Current == 0 {
			return "database schema is dirty at version 0 (none): rolling back migration 1 failed half way; " +
				"fix it by hand, then run `migrate force 0` if none of its tables remain, " +
				"or `migrate force 1` if all of migration 1 is still in place"
		}
		return fmt.Sprintf("database schema is dirty at version %[1]d (a migration to version %[1]d failed half way); "+
			"fix it by hand, then run `migrate force %[1]d` if the database now fully matches version %[1]d, "+
			"or, after undoing the failed migration's partial changes, `migrate force %[2]d` followed by `migrate up`",
			s.Current, previous(e.Driver, s.Current))
	}
	current := fmt.Sprintf("version %d", s.Current)
	if s.None {
		current = "version 0 (none)"
	}
	return fmt.Sprintf("database schema is at %s, this build needs version %d; "+
		"run `migrate up` (same DATABASE_URL) or set DATABASE_AUTO_MIGRATE=true", current, s.Latest)
}

// embedded lists the migrations embedded for driver, ordered by version.
func embedded(driver string) ([]Migration, error) {
	if driver != DriverPostgres && driver != DriverSQLite {
		return nil, fmt.Errorf("unknown database driver %q", driver)
	}
	entries, err := fs.ReadDir(migrations.FS, driver)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var list []Migration
	for _, e := range entries {
		mig, err := source.Parse(e.Name())
		if err != nil {
			return nil, fmt.Errorf("list migrations: %s: %w", e.Name(), err)
		}
		if mig.Direction == source.Up {
			list = append(list, Migration{Version: mig.Version, Name: mig.Identifier})
		}
	}
	slices.SortFunc(list, func(a, b Migration) int { return int(a.Version) - int(b.Version) })
	return list, nil
}

// Versions returns the versions embedded in this build for driver, in
// ascending order. Numbers may skip.
func Versions(driver string) ([]uint, error) {
	list, err := embedded(driver)
	if err != nil {
		return nil, err
	}
	out := make([]uint, len(list))
	for i, m := range list {
		out[i] = m.Version
	}
	return out, nil
}

// previous returns the embedded version of driver before v (0 when there
// is none, or the versions cannot be read).
func previous(driver string, v uint) uint {
	versions, _ := Versions(driver)
	prev := uint(0)
	for _, x := range versions {
		if x < v {
			prev = x
		}
	}
	return prev
}

// Latest is the highest migration version embedded for driver.
func Latest(driver string) (uint, error) {
	list, err := embedded(driver)
	if err != nil {
		return 0, err
	}
	if len(list) == 0 {
		return 0, fmt.Errorf("no migrations embedded for %s", driver)
	}
	return list[len(list)-1].Version, nil
}

// Status reads the recorded schema version.
func (m *Migrator) Status(ctx context.Context) (Status, error) {
	latest, err := Latest(m.driver)
	if err != nil {
		return Status{}, err
	}
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	v, dirty, err := m.drv.Version()
	if err != nil {
		return Status{}, fmt.Errorf("read schema version: %w", err)
	}
	s := Status{Dirty: dirty, Latest: latest}
	if v == database.NilVersion {
		s.None = true
	} else {
		s.Current = uint(v)
	}
	return s, nil
}

// History lists every embedded migration, oldest first, marking those at or
// below the recorded version as applied (migrations apply in order).
func (m *Migrator) History(ctx context.Context) ([]Migration, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	list, err := embedded(m.driver)
	if err != nil {
		return nil, err
	}
	for i := range list {
		list[i].Applied = !st.None && list[i].Version <= st.Current
	}
	return list, nil
}

// Check implements the proxy's start-up rule (SPEC §5). It returns nil when
// the proxy may serve: the schema is current; it was behind and autoMigrate
// applied the pending migrations (under the upgrade lock); or it is newer
// than this build (a warning is logged). It returns a *SchemaError when the
// schema is dirty, or behind and autoMigrate is off; other errors come from
// reading or migrating the database.
func (m *Migrator) Check(ctx context.Context, autoMigrate bool) error {
	st, err := m.Status(ctx)
	if err != nil {
		return err
	}
	switch {
	case st.Dirty:
		return &SchemaError{Status: st, Driver: m.driver}
	case !st.None && st.Current > st.Latest:
		m.logger.Warn(fmt.Sprintf("schema version %d is newer than this build knows (%d); serving — migrations are additive",
			st.Current, st.Latest), "schema_version", st.Current, "build_schema_version", st.Latest)
		return nil
	case !st.None && st.Current == st.Latest:
		return nil
	case !autoMigrate:
		return &SchemaError{Status: st, Driver: m.driver}
	}
	m.logger.Info("applying pending migrations", "schema_version", st.Current, "build_schema_version", st.Latest)
	if err := m.Up(ctx); err != nil {
		return err
	}
	return m.Check(ctx, false)
}

// Wait polls until the schema is clean and at (or beyond) Latest, for
// `migrate wait`. It returns an error when timeout elapses or ctx ends
// first; errors reading the version are logged and retried until then.
func (m *Migrator) Wait(ctx context.Context, timeout time.Duration) error {
	const interval = time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var last string
	for {
		st, err := m.Status(ctx)
		switch {
		case err != nil:
			last = err.Error()
			m.logger.Warn("read schema version", "error", err)
		case !st.Dirty && !st.None && st.Current >= st.Latest:
			return nil
		default:
			last = (&SchemaError{Status: st, Driver: m.driver}).Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for schema version: gave up after %s: %s", timeout, last)
		case <-ticker.C:
		}
	}
}
