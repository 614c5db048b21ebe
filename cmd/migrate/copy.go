package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/retention"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/store/transfer"
)

// sourceKeyEnv names the variable holding the source database's encryption
// key; the target's is ENCRYPTION_KEY.
const sourceKeyEnv = "SOURCE_ENCRYPTION_KEY"

// copyDatabase implements `migrate copy`: every row of inv.from into
// inv.to, verified, in one transaction on the target.
func copyDatabase(ctx context.Context, inv invocation, cfg *config.Config, getenv func(string) string, stdout io.Writer, logger *slog.Logger) (err error) {
	from, err := copyEnd("--from", inv.from)
	if err != nil {
		return err
	}
	to, err := copyEnd("--to", inv.to)
	if err != nil {
		return err
	}
	if from.URL == to.URL {
		return usageError{Msg: "--from and --to are the same database"}
	}
	srcCipher, err := sourceCipher(from, getenv)
	if err != nil {
		return err
	}
	if err := checkSourceSchema(ctx, from); err != nil {
		return err
	}
	dstCipher, undoKeyFile, err := targetCipher(to, cfg.EncryptionKey)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, undoKeyFile())
		}
	}()
	if err := migrateTarget(ctx, to, logger); err != nil {
		return err
	}

	src, err := openStore(ctx, from)
	if err != nil {
		return fmt.Errorf("open source %s: %w", from.Masked(), err)
	}
	defer src.Close()
	dst, err := openStore(ctx, to)
	if err != nil {
		return fmt.Errorf("open target %s: %w", to.Masked(), err)
	}
	defer dst.Close()

	fmt.Fprintf(stdout, "copying %s → %s\n", from.Masked(), to.Masked())
	var total int64
	_, err = transfer.Copy(ctx, src, dst, transfer.Options{
		Truncate: inv.truncate,
		Recrypt: []transfer.Recrypt{{
			Table: "projects", Column: "api_key_encrypted", From: srcCipher, To: dstCipher,
		}},
		Progress: func(st transfer.TableStats) {
			total += st.Rows
			fmt.Fprintf(stdout, "%-24s %9d rows %10.0f rows/s  checksum %s  ok\n",
				st.Table, st.Rows, st.RowsPerSecond(), st.Checksum)
		},
	})
	if err != nil {
		return fmt.Errorf("copy: %w; the target is unchanged", err)
	}
	if _, err := fmt.Fprintf(stdout, "copied %d rows; row counts and checksums match; committed\n", total); err != nil {
		return err
	}
	// On PostgreSQL the copied rows went to the default partitions; give
	// their days (and the coming ones) partitions of their own now rather
	// than at the proxy's first retention sweep. The data is committed
	// whatever happens here.
	today := time.Now().UTC().Truncate(24 * time.Hour)
	n, perr := dst.EnsurePartitions(ctx, today, today.Add((retention.DefaultPartitionsAhead+1)*24*time.Hour))
	switch {
	case perr != nil:
		logger.Warn("create partitions after the copy; the proxy's retention job will retry", "error", perr)
	case n > 0:
		_, err = fmt.Fprintf(stdout, "created %d daily partitions\n", n)
	}
	return err
}

// copyEnd parses the URL of --from or --to.
func copyEnd(flag, raw string) (config.Database, error) {
	d, err := config.ParseDatabaseURL(raw)
	if err != nil {
		return d, usageError{Msg: fmt.Sprintf("%s: %v", flag, err)}
	}
	if d.Path == ":memory:" {
		return d, usageError{Msg: flag + ": an in-memory database cannot be copied"}
	}
	return d, nil
}

// dsn is what schema and the stores take: the URL, or the SQLite path.
func dsn(d config.Database) string {
	if d.Driver == schema.DriverSQLite {
		return d.Path
	}
	return d.URL
}

// checkSourceSchema requires the source at this build's version, read
// without writing to it.
func checkSourceSchema(ctx context.Context, d config.Database) error {
	if d.Driver == schema.DriverSQLite {
		if _, err := os.Stat(d.Path); err != nil {
			return fmt.Errorf("source database: %w", err)
		}
	}
	probe, err := schema.NewProbe(d.Driver, dsn(d), 0)
	if err != nil {
		return err
	}
	defer probe.Close()
	st, err := probe.Status(ctx)
	if err != nil {
		return fmt.Errorf("source %s: %w", d.Masked(), err)
	}
	if st.None || st.Dirty || st.Current != st.Latest {
		return fmt.Errorf("source %s is at schema version %d (dirty=%t), this build copies version %d: run `migrate up` with DATABASE_URL set to the source first",
			d.Masked(), st.Current, st.Dirty, st.Latest)
	}
	return nil
}

// migrateTarget brings the target to this build's version.
func migrateTarget(ctx context.Context, d config.Database, logger *slog.Logger) error {
	if d.Driver == schema.DriverSQLite {
		if err := prepareSQLiteFile(d.Path); err != nil {
			return err
		}
	}
	m, err := schema.New(ctx, d.Driver, dsn(d), logger)
	if err != nil {
		return fmt.Errorf("target %s: %w", d.Masked(), err)
	}
	defer m.Close()
	if err := m.Up(ctx); err != nil {
		return fmt.Errorf("target %s: %w", d.Masked(), err)
	}
	return nil
}

// sourceCipher is the key the source's proxy encrypted with:
// SOURCE_ENCRYPTION_KEY, or for SQLite the key file beside the database.
func sourceCipher(d config.Database, getenv func(string) string) (*secret.Cipher, error) {
	var key []byte
	var err error
	switch v := getenv(sourceKeyEnv); {
	case v != "":
		if key, err = secret.ParseKey(v); err != nil {
			return nil, fmt.Errorf("%s: %w", sourceKeyEnv, err)
		}
	case d.Driver == schema.DriverSQLite:
		if key, err = secret.LoadKeyFile(secret.KeyFileBeside(d.Path)); err != nil {
			return nil, fmt.Errorf("source encryption key: %w (set %s to the ENCRYPTION_KEY the source proxy used)", err, sourceKeyEnv)
		}
	default:
		return nil, fmt.Errorf("%s is required to copy from PostgreSQL: set it to the ENCRYPTION_KEY of the proxies that use the source", sourceKeyEnv)
	}
	return secret.NewCipher(key)
}

// targetCipher is the key the target's proxy will use: ENCRYPTION_KEY, or
// for SQLite the key file beside the database (created when missing). The
// returned func removes a key file created here, for when the copy fails.
func targetCipher(d config.Database, key []byte) (*secret.Cipher, func() error, error) {
	undo := func() error { return nil }
	if key == nil {
		if d.Driver != schema.DriverSQLite {
			return nil, undo, errors.New("ENCRYPTION_KEY is required for a PostgreSQL target: set it to the key its proxies will use (generate one with: openssl rand -base64 32)")
		}
		path := secret.KeyFileBeside(d.Path)
		var created bool
		var err error
		if key, created, err = secret.LoadOrCreateKeyFile(path); err != nil {
			return nil, undo, fmt.Errorf("target encryption key file: %w", err)
		}
		if created {
			undo = func() error { return os.Remove(path) }
		}
	}
	c, err := secret.NewCipher(key)
	return c, undo, err
}

// copyStore is a store the copy reads from or writes to.
type copyStore interface {
	transfer.Database
	EnsurePartitions(ctx context.Context, from, to time.Time) (int, error)
	Close() error
}

func openStore(ctx context.Context, d config.Database) (copyStore, error) {
	if d.Driver == schema.DriverSQLite {
		db, err := sqlite.Open(ctx, sqlite.Options{Path: d.Path, ReadConns: 1})
		if errors.Is(err, sqlite.ErrInUse) {
			return nil, fmt.Errorf("%w (stop the proxy first)", err)
		}
		return db, err
	}
	return postgres.Open(ctx, postgres.Options{URL: d.URL, PoolSize: 2})
}
