package schema

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

func pgxConnConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	return cfg, nil
}

// sqliteDSN turns a file path, ":memory:", or a "file:" URI (such as the
// shared in-memory database of a running store, see sqlite.DB.SchemaDSN)
// into a modernc.org/sqlite DSN with the pragmas migrations need.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "journal_mode(WAL)")
	switch {
	case path == ":memory:":
		return "file::memory:?" + q.Encode()
	case strings.HasPrefix(path, "file:") && strings.Contains(path, "?"):
		return path + "&" + q.Encode()
	case strings.HasPrefix(path, "file:"):
		return path + "?" + q.Encode()
	}
	return "file:" + path + "?" + q.Encode()
}
