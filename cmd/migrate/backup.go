package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
)

// backup implements `migrate backup --to FILE`: SQLite's VACUUM INTO while
// the proxy serves; for PostgreSQL, the pg_dump command to run.
func backup(ctx context.Context, d config.Database, file string, stdout io.Writer) error {
	if d.Driver != schema.DriverSQLite {
		_, err := fmt.Fprintf(stdout, "PostgreSQL is backed up with its own tools, online:\n"+
			"  pg_dump --format=custom --file=%s '%s'\n"+
			"restore into an empty database with:\n"+
			"  pg_restore --dbname='%s' %s\n"+
			"and keep ENCRYPTION_KEY with the dump: without it the upstream keys cannot be read.\n",
			file, d.Masked(), d.Masked(), file)
		return err
	}
	if d.Path == ":memory:" {
		return usageError{Msg: "backup: an in-memory database has nothing to back up"}
	}
	if err := sqlite.Backup(ctx, d.Path, file); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "backed up %s to %s\nkeep the key file beside the database (or ENCRYPTION_KEY) with it\n", d.Masked(), file)
	return err
}

// restore implements `migrate restore --from FILE` for SQLite: check the
// backup, then replace the database while no proxy holds it.
func restore(ctx context.Context, d config.Database, file string, stdout io.Writer) error {
	if d.Driver != schema.DriverSQLite {
		return fmt.Errorf("restore replaces SQLite databases only; for PostgreSQL run: pg_restore --dbname='%s' %s", d.Masked(), file)
	}
	if d.Path == ":memory:" {
		return usageError{Msg: "restore: cannot restore into an in-memory database"}
	}
	version, dirty, err := sqlite.Check(ctx, file)
	if err != nil {
		return fmt.Errorf("restore: the backup is not usable: %w", err)
	}
	latest, err := schema.Latest(schema.DriverSQLite)
	if err != nil {
		return err
	}
	switch {
	case dirty:
		return fmt.Errorf("restore: the backup's schema is dirty at version %d; restore another backup", version)
	case version > int64(latest):
		return fmt.Errorf("restore: the backup is at schema version %d, newer than this build's %d: use the migrate of the release that wrote it", version, latest)
	}
	if err := sqlite.Restore(ctx, d.Path, file); err != nil {
		if errors.Is(err, sqlite.ErrInUse) {
			return fmt.Errorf("restore: %w (stop the proxy first)", err)
		}
		return err
	}
	_, err = fmt.Fprintf(stdout, "restored %s (schema version %d) to %s\n", file, version, d.Masked())
	if err == nil && version < int64(latest) {
		_, err = fmt.Fprintf(stdout, "the schema is behind this build's %d: run `migrate up` (or start the proxy with DATABASE_AUTO_MIGRATE=true)\n", latest)
	}
	return err
}
