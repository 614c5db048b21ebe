package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// Backup writes a consistent copy of the database at path to dest (which
// must not exist; it is created 0600) with VACUUM INTO. It reads through a
// connection of its own that takes no lock file, so it works while a DB (a
// serving proxy) holds the database and leaves that DB undisturbed: in WAL
// mode the copy is one read transaction beside the writer.
func Backup(ctx context.Context, path, dest string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: create %s: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// Not query_only: SQLite counts VACUUM INTO as a write.
	err = withConn(ctx, path, url.Values{}, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, `VACUUM INTO ?`, dest)
		return err
	})
	if err != nil {
		return errors.Join(fmt.Errorf("backup: %w", translate(err)), os.Remove(dest))
	}
	if err := syncFile(dest); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// Check verifies a database file (a backup before Restore): it must pass
// PRAGMA integrity_check; it returns the schema version recorded in it.
// It opens the file read-only.
func Check(ctx context.Context, path string) (version int64, dirty bool, err error) {
	if _, err := os.Stat(path); err != nil {
		return 0, false, fmt.Errorf("check %s: %w", path, err)
	}
	err = withConn(ctx, path, url.Values{"mode": {"ro"}}, func(conn *sql.Conn) error {
		var result string
		if err := conn.QueryRowContext(ctx, `PRAGMA integrity_check(1)`).Scan(&result); err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		if result != "ok" {
			return fmt.Errorf("integrity check failed: %s", result)
		}
		if err := conn.QueryRowContext(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&version, &dirty); err != nil {
			return fmt.Errorf("read schema version (is it a database of this proxy?): %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("check %s: %w", path, err)
	}
	return version, dirty, nil
}

// Restore replaces the database at path with the database in the file
// src (checked with Check first). It holds the database's lock file
// throughout, so it fails with ErrInUse while a DB (a proxy) has the
// database open.
//
// The copy is made by SQLite, not byte by byte: VACUUM INTO reads src as
// one transaction, so transactions committed to src but still in its -wal
// file (a backup taken by copying a live database, say) are included, as
// a checkpoint would. The copy is written beside the database, verified
// (PRAGMA integrity_check and its schema version), synced, and only then
// renamed over the database; the old database's -wal and -shm files are
// removed first, so that they can never be applied to the restored file.
// On any error the database is left as it was.
func Restore(ctx context.Context, path, src string) (err error) {
	lock, err := acquireLock(path + ".lock")
	if errors.Is(err, errLocked) {
		return &inUseError{path: path}
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lock.release()) }()

	tmp := path + ".restore"
	if err := removeIfExists(tmp); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fail := func(err error) error { return errors.Join(fmt.Errorf("restore: %w", err), removeIfExists(tmp)) }
	want, _, err := Check(ctx, src)
	if err != nil {
		return fail(err)
	}
	err = withConn(ctx, src, url.Values{"mode": {"ro"}}, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, `VACUUM INTO ?`, tmp)
		return translate(err)
	})
	if err != nil {
		return fail(fmt.Errorf("copy %s: %w", src, err))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	got, _, err := Check(ctx, tmp)
	if err != nil {
		return fail(fmt.Errorf("verify the copy: %w", err))
	}
	if got != want {
		return fail(fmt.Errorf("verify the copy: schema version %d, the backup's is %d", got, want))
	}
	if err := syncFile(tmp); err != nil {
		return fail(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := removeIfExists(path + suffix); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncFile(filepath.Dir(path)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// withConn runs fn on a connection of its own to the file at path, with
// the extra URI parameters of query (such as mode=ro).
func withConn(ctx context.Context, path string, query url.Values, fn func(*sql.Conn) error) error {
	query.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	pool, err := sql.Open("sqlite", "file:"+path+"?"+query.Encode())
	if err != nil {
		return fmt.Errorf("open sqlite: %w", err)
	}
	defer pool.Close()
	conn, err := pool.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to sqlite: %w", err)
	}
	defer conn.Close()
	return fn(conn)
}

// syncFile flushes a file or directory to disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
