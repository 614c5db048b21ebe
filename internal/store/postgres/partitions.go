package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// partitionedTables are the tables partitioned by UTC day of created_at
// (migration 000004). Each has a DEFAULT partition <table>_default and
// daily partitions <table>_pYYYYMMDD covering [day, day + 1).
var partitionedTables = []string{"usage", "audit_events"}

const (
	// ddlLockTimeout bounds how long partition DDL waits for its locks.
	// Creating or dropping a partition briefly needs locks that queue the
	// inserts behind it, so it gives up quickly (and retries) rather than
	// hold writers up behind a long query.
	ddlLockTimeout = 50 * time.Millisecond
	// ddlAttempts and ddlRetryPause bound the retries of partition DDL that
	// gave up on a lock.
	ddlAttempts   = 5
	ddlRetryPause = 200 * time.Millisecond
)

var partitionName = regexp.MustCompile(`_p([0-9]{8})$`)

func dayPartition(table string, day time.Time) string {
	return table + "_p" + day.Format("20060102")
}

// partitionDays returns the days of table's daily partitions, oldest
// first, with their partition names.
func partitionDays(ctx context.Context, c *pgx.Conn, table string) ([]time.Time, []string, error) {
	rows, err := c.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1)`, table)
	if err != nil {
		return nil, nil, translate(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, translate(err)
	}
	slices.Sort(names)
	var (
		days []time.Time
		kept []string
	)
	for _, n := range names {
		m := partitionName.FindStringSubmatch(n)
		if m == nil || n != table+"_p"+m[1] {
			continue
		}
		d, err := time.Parse("20060102", m[1])
		if err != nil {
			continue
		}
		days = append(days, d)
		kept = append(kept, n)
	}
	return days, kept, nil
}

// EnsurePartitions creates the daily partitions of usage and audit_events
// for every UTC day overlapping [from, to) that lacks one, and for every
// day with rows in a default partition, moving those rows into it. It
// returns how many partitions it created. Each partition is created in its
// own short transaction whose locks wait at most ddlLockTimeout (retried a
// few times), so inserts are never held up for long.
func (db *DB) EnsurePartitions(ctx context.Context, from, to time.Time) (int, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	created := 0
	for _, table := range partitionedTables {
		have, _, err := partitionDays(ctx, c.Conn(), table)
		if err != nil {
			return created, fmt.Errorf("list partitions of %s: %w", table, err)
		}
		rows, err := c.Query(ctx, `SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM `+ident(table+"_default"))
		if err != nil {
			return created, fmt.Errorf("read %s_default: %w", table, translate(err))
		}
		want, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
		if err != nil {
			return created, fmt.Errorf("read %s_default: %w", table, translate(err))
		}
		for d := from.UTC().Truncate(24 * time.Hour); d.Before(to); d = d.Add(24 * time.Hour) {
			want = append(want, d)
		}
		for _, d := range want {
			d = time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)
			if slices.ContainsFunc(have, d.Equal) {
				continue
			}
			if err := db.ddl(ctx, c.Conn(), func(tx pgx.Tx) error { return createPartition(ctx, tx, table, d) }); err != nil {
				return created, fmt.Errorf("create partition %s: %w", dayPartition(table, d), err)
			}
			have = append(have, d)
			created++
		}
	}
	return created, nil
}

// createPartition creates table's partition of day as a plain table, moves
// the day's rows from the default partition into it, and attaches it. The
// default partition is locked against writes meanwhile (only rows for days
// without a partition go there); ATTACH itself does not block inserts into
// the other partitions.
func createPartition(ctx context.Context, tx pgx.Tx, table string, day time.Time) error {
	name, def, parent := ident(dayPartition(table, day)), ident(table+"_default"), ident(table)
	lo, hi := day, day.Add(24*time.Hour)
	bound := func(t time.Time) string { return "'" + t.Format("2006-01-02") + " 00:00:00+00'" }
	days := []any{lo, hi}
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`LOCK TABLE ` + def + ` IN SHARE ROW EXCLUSIVE MODE`, nil},
		{`CREATE TABLE ` + name + ` (LIKE ` + parent + ` INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`, nil},
		{`INSERT INTO ` + name + ` SELECT * FROM ` + def + ` WHERE created_at >= $1 AND created_at < $2`, days},
		{`DELETE FROM ` + def + ` WHERE created_at >= $1 AND created_at < $2`, days},
		{`ALTER TABLE ` + parent + ` ATTACH PARTITION ` + name + ` FOR VALUES FROM (` + bound(lo) + `) TO (` + bound(hi) + `)`, nil},
	} {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return err
		}
	}
	return nil
}

// DropUsagePartitionsBefore drops the daily usage partitions whose whole
// day is before t, each with its roll-up rows in one transaction, and
// returns how many rows they held.
func (db *DB) DropUsagePartitionsBefore(ctx context.Context, t time.Time) (int64, error) {
	n, err := db.dropPartitionsBefore(ctx, "usage", t, `DELETE FROM usage_rollup
		WHERE granularity IN ('day', 'hour') AND bucket >= $1 AND bucket < $2`)
	if err != nil {
		return n, fmt.Errorf("drop usage partitions: %w", err)
	}
	return n, nil
}

// DropAuditPartitionsBefore drops the daily audit_events partitions whose
// whole day is before t and returns how many rows they held.
func (db *DB) DropAuditPartitionsBefore(ctx context.Context, t time.Time) (int64, error) {
	n, err := db.dropPartitionsBefore(ctx, "audit_events", t, "")
	if err != nil {
		return n, fmt.Errorf("drop audit partitions: %w", err)
	}
	return n, nil
}

// dropPartitionsBefore counts, then drops, one at a time and oldest first,
// each of table's daily partitions that ends at or before t. A non-empty
// also runs first in the same transaction, with the day's bounds as $1 and
// $2 (to delete what is derived from the day's rows). The drop takes a
// short exclusive lock on the parent table, bounded like all partition DDL
// by ddlLockTimeout.
func (db *DB) dropPartitionsBefore(ctx context.Context, table string, t time.Time, also string) (int64, error) {
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	days, names, err := partitionDays(ctx, c.Conn(), table)
	if err != nil {
		return 0, err
	}
	var dropped int64
	for i, d := range days {
		if d.Add(24 * time.Hour).After(t) {
			break
		}
		var n int64
		if err := c.QueryRow(ctx, `SELECT count(*) FROM `+ident(names[i])).Scan(&n); err != nil {
			return dropped, translate(err)
		}
		if err := db.ddl(ctx, c.Conn(), func(tx pgx.Tx) error {
			if also != "" {
				if _, err := tx.Exec(ctx, also, d, d.Add(24*time.Hour)); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `DROP TABLE `+ident(names[i]))
			return err
		}); err != nil {
			return dropped, fmt.Errorf("drop %s: %w", names[i], err)
		}
		dropped += n
	}
	return dropped, nil
}

// ddl runs fn in a transaction whose lock waits end after ddlLockTimeout,
// retrying up to ddlAttempts times when a lock was not granted.
func (db *DB) ddl(ctx context.Context, c *pgx.Conn, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = '%dms'`, ddlLockTimeout.Milliseconds())); err != nil {
				return err
			}
			return fn(tx)
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.LockNotAvailable || attempt == ddlAttempts {
			return translate(err)
		}
		if err := sleep(ctx, ddlRetryPause); err != nil {
			return err
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
