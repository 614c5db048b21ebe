package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
)

const verbsUsage = `migrate applies, inspects and repairs the database schema of LLM Proxy.

Usage:
  migrate <verb> [flags]

Verbs:
  up [--wait D]          apply all pending migrations; first wait up to D
                         (default 60s) for the database to accept connections
  down [N]               roll back the N most recent migrations (default 1)
  current                print the current version and whether it is dirty
  history                list every migration as applied or pending
  goto V                 migrate up or down to version V (0: roll back all)
  force V                record version V as applied and clean, without
                         running anything (after fixing a dirty schema by
                         hand); V = 0 records that nothing is applied
  wait [--timeout D]     block until the schema is at this build's version
                         (default timeout 5m), e.g. as an initContainer
  copy --from URL --to URL [--truncate]
                         copy every row between databases (SQLite ↔
                         PostgreSQL): migrates the target first, refuses a
                         target holding data unless --truncate, re-encrypts
                         upstream keys from the source key (SOURCE_ENCRYPTION_KEY,
                         or for SQLite the key file beside it) to the target
                         key (ENCRYPTION_KEY, or for SQLite the key file
                         beside it), verifies row counts and checksums, and
                         commits all or nothing
  backup --to FILE       SQLite: consistent copy of the database while the
                         proxy serves (VACUUM INTO); PostgreSQL: prints the
                         pg_dump command
  restore --from FILE    SQLite: check the backup (integrity, schema version)
                         and replace the database with it; the proxy must be
                         stopped
  help                   print this help

The database comes from the same settings as the proxy (DATABASE_URL etc.;
copy takes both databases from --from and --to instead); only the settings
below apply to migrate.

`

// settings are the configuration settings migrate uses: where the database
// is and how to log.
var settings = []string{"CONFIG_FILE", "DATABASE_URL", "DB_DRIVER", "DATABASE_PATH", "ENCRYPTION_KEY", "LOG_LEVEL", "LOG_FORMAT"}

const (
	defaultConnectWait = 60 * time.Second
	defaultWaitTimeout = 5 * time.Minute
)

// invocation is a parsed command line.
type invocation struct {
	verb     string
	n        int           // down: steps; goto: version; force: version
	wait     time.Duration // up: how long to wait for the database
	timeout  time.Duration // wait: how long to wait for the schema
	from     string        // copy: source database URL
	to       string        // copy: target database URL
	truncate bool          // copy: empty the target first
}

// run executes one migrate command with the environment getenv. Help and
// status lines go to stdout, logs and the database being used (password
// masked) to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "help" {
		args = []string{"-h"}
	}
	inv := invocation{wait: defaultConnectWait, timeout: defaultWaitTimeout}
	var fs *flag.FlagSet
	var help bytes.Buffer
	cfg, positional, err := config.LoadWith("migrate", args, &help, config.Options{
		Getenv:   getenv,
		Settings: settings,
		Flags: func(f *flag.FlagSet) {
			fs = f
			f.DurationVar(&inv.wait, "wait", defaultConnectWait, "up: how long to wait for the database to accept connections")
			f.DurationVar(&inv.timeout, "timeout", defaultWaitTimeout, "wait: how long to wait for the schema to reach this build's version")
			f.StringVar(&inv.from, "from", "", "copy: the source database URL; restore: the backup file")
			f.StringVar(&inv.to, "to", "", "copy: the target database URL; backup: the file to write")
			f.BoolVar(&inv.truncate, "truncate", false, "copy: empty the target's tables first (in the copy's transaction)")
		},
	})
	if errors.Is(err, flag.ErrHelp) {
		_, err := io.WriteString(stdout, verbsUsage+help.String())
		return err
	}
	if err != nil {
		return err
	}
	if err := parseVerb(&inv, positional, fs); err != nil {
		return err
	}

	logger, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	switch inv.verb {
	case "copy":
		return copyDatabase(ctx, inv, cfg, getenv, stdout, logger)
	case "backup":
		return backup(ctx, cfg.Database, inv.to, stdout)
	case "restore":
		return restore(ctx, cfg.Database, inv.from, stdout)
	}
	fmt.Fprintf(stderr, "migrate: %s\n", cfg.Database.Masked())

	dsn := cfg.Database.URL
	if cfg.Database.Driver == schema.DriverSQLite {
		dsn = cfg.Database.Path
		if err := prepareSQLiteFile(dsn); err != nil {
			return err
		}
	}
	connectWait := time.Duration(0)
	switch inv.verb {
	case "up":
		connectWait = inv.wait
	case "wait":
		connectWait = inv.timeout
	}
	start := time.Now()
	m, err := schema.Connect(ctx, cfg.Database.Driver, dsn, connectWait, logger)
	if err != nil {
		return err
	}
	defer m.Close()

	switch inv.verb {
	case "up":
		err = m.Up(ctx)
	case "down":
		err = m.Down(ctx, inv.n)
	case "goto":
		err = m.Goto(ctx, uint(inv.n))
	case "force":
		err = m.Force(ctx, inv.n)
	case "wait":
		err = m.Wait(ctx, max(inv.timeout-time.Since(start), 0))
	case "history":
		return printHistory(ctx, m, stdout)
	}
	if err != nil {
		return err
	}
	return printStatus(ctx, m, stdout)
}

// parseVerb checks the positional arguments and the verb-specific flags.
func parseVerb(inv *invocation, positional []string, fs *flag.FlagSet) error {
	if len(positional) == 0 {
		return usageError{Msg: "no verb given"}
	}
	inv.verb = positional[0]
	rest := positional[1:]
	var problem error
	verbFlags := map[string][]string{ // flag → the verbs it applies to
		"wait": {"up"}, "timeout": {"wait"}, "from": {"copy", "restore"}, "to": {"copy", "backup"}, "truncate": {"copy"},
	}
	fs.Visit(func(f *flag.Flag) {
		if verbs, ok := verbFlags[f.Name]; ok && !slices.Contains(verbs, inv.verb) {
			problem = usageError{Msg: fmt.Sprintf("--%s does not apply to %s", f.Name, inv.verb)}
		}
	})
	if problem != nil {
		return problem
	}
	args := map[string][2]int{ // verb → min, max positional arguments
		"up": {0, 0}, "current": {0, 0}, "history": {0, 0}, "wait": {0, 0},
		"down": {0, 1}, "goto": {1, 1}, "force": {1, 1}, "copy": {0, 0}, "backup": {0, 0}, "restore": {0, 0},
	}
	bounds, ok := args[inv.verb]
	if !ok {
		return usageError{Msg: fmt.Sprintf("unknown verb %q", inv.verb)}
	}
	if len(rest) < bounds[0] || len(rest) > bounds[1] {
		return usageError{Msg: fmt.Sprintf("%s takes %d to %d arguments, got %d", inv.verb, bounds[0], bounds[1], len(rest))}
	}
	var err error
	switch inv.verb {
	case "down":
		inv.n = 1
		if len(rest) == 1 {
			inv.n, err = strconv.Atoi(rest[0])
			if err != nil || inv.n < 1 {
				return usageError{Msg: fmt.Sprintf("down: N must be a positive number, got %q", rest[0])}
			}
		}
	case "goto":
		inv.n, err = strconv.Atoi(rest[0])
		if err != nil || inv.n < 0 {
			return usageError{Msg: fmt.Sprintf("goto: V must be a version number (0 or more), got %q", rest[0])}
		}
	case "force":
		inv.n, err = strconv.Atoi(rest[0])
		if err != nil || inv.n < -1 {
			return usageError{Msg: fmt.Sprintf("force: V must be a version number (0 or more), got %q", rest[0])}
		}
	case "up":
		if inv.wait < 0 {
			return usageError{Msg: "--wait must not be negative"}
		}
	case "wait":
		if inv.timeout <= 0 {
			return usageError{Msg: "--timeout must be positive"}
		}
	case "copy":
		if inv.from == "" || inv.to == "" {
			return usageError{Msg: "copy needs --from URL and --to URL"}
		}
	case "backup":
		if inv.to == "" {
			return usageError{Msg: "backup needs --to FILE"}
		}
	case "restore":
		if inv.from == "" {
			return usageError{Msg: "restore needs --from FILE"}
		}
	}
	return nil
}

// prepareSQLiteFile creates the database directory (0700) and file (0600)
// if missing, so SQLite does not create them with looser permissions.
func prepareSQLiteFile(path string) error {
	if path == ":memory:" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create database directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	return f.Close()
}

func printStatus(ctx context.Context, m *schema.Migrator, w io.Writer) error {
	st, err := m.Status(ctx)
	if err != nil {
		return err
	}
	state := "clean"
	if st.Dirty {
		state = "dirty"
	}
	switch {
	case st.None && !st.Dirty:
		_, err = fmt.Fprintln(w, "no migrations applied")
	default:
		_, err = fmt.Fprintf(w, "version %d (%s)\n", st.Current, state)
	}
	return err
}

func printHistory(ctx context.Context, m *schema.Migrator, w io.Writer) error {
	list, err := m.History(ctx)
	if err != nil {
		return err
	}
	for _, mig := range list {
		state := "pending"
		if mig.Applied {
			state = "applied"
		}
		if _, err := fmt.Fprintf(w, "%6d  %-32s %s\n", mig.Version, mig.Name, state); err != nil {
			return err
		}
	}
	return nil
}
