package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
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

// Restore replaces the database at path with a copy of the file src
// (checked with Check first). It holds the database's lock file
// throughout, so it fails with ErrInUse while a DB (a proxy) has the
// database open. The copy is written beside the database, synced, and
// renamed over it; the old database's -wal and -shm files are removed
// first, so that they can never be applied to the restored file.
func Restore(path, src string) (err error) {
	lock, err := acquireLock(path + ".lock")
	if errors.Is(err, errLocked) {
		return &inUseError{path: path}
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lock.release()) }()

	tmp := path + ".restore"
	if err := copyFile(src, tmp); err != nil {
		return errors.Join(fmt.Errorf("restore: %w", err), removeIfExists(tmp))
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := removeIfExists(path + suffix); err != nil {
			return errors.Join(fmt.Errorf("restore: %w", err), removeIfExists(tmp))
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("restore: %w", err), removeIfExists(tmp))
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

// copyFile copies src to a new file dst (mode 0600, replacing a leftover
// of an interrupted restore) and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := removeIfExists(dst); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(err, out.Close())
	}
	return errors.Join(out.Sync(), out.Close())
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
