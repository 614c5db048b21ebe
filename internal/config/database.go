package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Database holds the database settings (SPEC §3.1).
type Database struct {
	Driver string // "sqlite" or "postgres"
	// URL is normalised: for PostgreSQL a pgx-acceptable postgres:// URL
	// (postgresql:// and postgresql+asyncpg:// rewritten, ssl=X turned into
	// sslmode=X, ?host= unix sockets kept); for SQLite "sqlite:///<Path>".
	// It may hold a password: print Masked(), never URL.
	URL         string
	Path        string        // SQLite only: file path as given (relative or absolute) or ":memory:"
	PoolSize    int           // DATABASE_POOL_SIZE, 1..100, default 5
	MaxOverflow int           // DATABASE_MAX_OVERFLOW, 0..100, default 10
	PoolTimeout time.Duration // DATABASE_POOL_TIMEOUT, > 0, default 30s
	// MaxIdleConns (DATABASE_MAX_IDLE_CONNS, 0..PoolSize+MaxOverflow,
	// default PoolSize) is how many connections stay open while the
	// database is idle: pgxpool's MinConns, opened at start-up and kept;
	// connections above it close after a minute unused. pgxpool's
	// MinIdleConns is not it: it keeps that many idle beside the busy ones,
	// opening more under load, and idle trimming ignores it.
	MaxIdleConns    int
	ConnMaxLifetime time.Duration // DATABASE_CONN_MAX_LIFETIME, > 0, default 1h
	Echo            bool          // DATABASE_ECHO: log every SQL statement (no argument values)
	EchoPool        bool          // DATABASE_ECHO_POOL: log pool events
	AutoMigrate     bool          // DATABASE_AUTO_MIGRATE, default true
	// PoolSettings names the pool settings given explicitly (pool size, max
	// overflow, pool timeout, max idle conns, conn max lifetime, echo
	// pool), so a SQLite deployment, which has no such pool, can warn once
	// that they are ignored.
	PoolSettings []string
}

// Masked returns the URL with any password replaced by "***".
func (d Database) Masked() string {
	return MaskURL(d.URL)
}

// sslModes are the sslmode values libpq and pgx accept.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// queryPassword matches a password given as a query option or DSN keyword.
var queryPassword = regexp.MustCompile(`(?i)((?:^|[?&\s])password=)('[^']*'|[^&#\s]*)`)

// MaskURL returns raw with any password replaced by "***": the password of
// the userinfo (scheme://user:***@host/...) and a password= query option or
// keyword. It is safe on malformed input, where it masks more rather than
// less.
func MaskURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return queryPassword.ReplaceAllString(raw, "${1}***")
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	authority, tail := rest[:end], rest[end:]
	if _, err := url.Parse(raw); err != nil || (strings.Contains(tail, "@") && !strings.Contains(authority, "@")) {
		// An unescaped '/', '?' or '#' in a password ends the authority
		// early: treat everything before the last '@' as user:password.
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if user, _, hasPassword := strings.Cut(rest[:at], ":"); hasPassword {
				return scheme + "://" + user + ":***" + queryPassword.ReplaceAllString(rest[at:], "${1}***")
			}
		}
	}
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		if user, _, hasPassword := strings.Cut(authority[:at], ":"); hasPassword {
			authority = user + ":***" + authority[at:]
		}
	}
	return scheme + "://" + authority + queryPassword.ReplaceAllString(tail, "${1}***")
}

// ParseDatabaseURL validates and normalises a database URL of any accepted
// form (SPEC §3.1) and returns a Database with Driver, URL and Path set; the
// pool settings are left zero. Its error never contains the password.
func ParseDatabaseURL(raw string) (Database, error) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(raw), "://")
	if !ok {
		return Database{}, errors.New("must be a URL such as sqlite:///./var/db/proxy.db or postgres://user:pass@host:5432/db")
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite+aiosqlite", "sqlite+pysqlite":
		return parseSQLite(rest)
	case "postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg2", "postgres+asyncpg":
		return parsePostgres(rest)
	default:
		return Database{}, fmt.Errorf("unsupported scheme %q: use sqlite:/// or postgres://", scheme)
	}
}

func parseSQLite(rest string) (Database, error) {
	if strings.ContainsAny(rest, "?#") {
		return Database{}, errors.New("SQLite URLs take no query options")
	}
	if !strings.HasPrefix(rest, "/") {
		return Database{}, errors.New("SQLite URLs have no host: use sqlite:///./relative.db, sqlite:////absolute/path.db or sqlite:///:memory:")
	}
	path, err := url.PathUnescape(rest[1:])
	if err != nil {
		return Database{}, errors.New("SQLite path has an invalid %-escape")
	}
	if path == "" {
		return Database{}, errors.New("no SQLite file path: use sqlite:///./var/db/proxy.db, or sqlite:///:memory: for an in-memory database")
	}
	return Database{Driver: "sqlite", URL: "sqlite:///" + path, Path: path}, nil
}

func parsePostgres(rest string) (Database, error) {
	user, host, path, query, err := splitPostgres(rest)
	if err != nil {
		return Database{}, err
	}
	var (
		opts          []string
		sslmode, ssl  string
		hasSSLMode    bool
		sslOptionSeen bool
	)
	for _, opt := range strings.Split(query, "&") {
		if opt == "" {
			continue
		}
		k, v, _ := strings.Cut(opt, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return Database{}, errors.New("query option has an invalid %-escape")
		}
		switch key {
		case "sslmode":
			if !contains(sslModes, val) {
				return Database{}, fmt.Errorf("sslmode must be one of %s, not %q", strings.Join(sslModes, ", "), val)
			}
			sslmode, hasSSLMode = val, true
		case "ssl":
			switch strings.ToLower(val) {
			case "true":
				val = "require"
			case "false":
				val = "disable"
			}
			if !contains(sslModes, val) {
				return Database{}, fmt.Errorf("ssl must be true, false or one of %s, not %q", strings.Join(sslModes, ", "), val)
			}
			ssl, sslOptionSeen = val, true
			continue
		case "connect_timeout":
			if n, err := strconv.Atoi(val); err != nil || n < 0 {
				return Database{}, fmt.Errorf("connect_timeout must be a whole number of seconds, not %q", val)
			}
		}
		opts = append(opts, opt)
	}
	if sslOptionSeen {
		switch {
		case !hasSSLMode:
			opts = append(opts, "sslmode="+ssl)
		case sslmode != ssl:
			return Database{}, errors.New("ssl= and sslmode= disagree: give only sslmode=")
		}
	}
	normalised := "postgres://" + host + path
	if user != nil {
		// Re-escaped: pgx splits the authority at its first '@' and takes
		// no '@', ':' or '/' unescaped in a user name or password.
		normalised = "postgres://" + user.String() + "@" + host + path
	}
	if len(opts) > 0 {
		normalised += "?" + strings.Join(opts, "&")
	}
	return Database{Driver: "postgres", URL: normalised}, nil
}

// splitPostgres splits a PostgreSQL URL (after "scheme://") into its
// parts, the path escaped and the query raw. Seed guides print URLs whose
// user name or password holds characters a URL parser cannot take
// unescaped: Azure's user@server user names, passwords with '@', ':', '/',
// '#', '?' or a '%' that starts no escape. When the standard reading fails,
// or puts an '@' in the path or in a query option's name, or a #fragment
// after the password, everything before the last '@' is user:password
// (split at the first ':', each part %-decoded when it decodes): the same
// reading MaskURL masks. The standard reading comes first so that an '@' in
// a query value (application_name=me@work) stays there; a URL with both an
// unescaped special character in its password and an '@' in a query value
// must percent-encode one of them.
func splitPostgres(rest string) (user *url.Userinfo, host, path, query string, err error) {
	const hint = " (percent-encode special characters in the user name and password)"
	if u, err := url.Parse("postgres://" + rest); err == nil && u.Fragment == "" && !strings.Contains(u.Path, "@") && !atInQueryKey(u.RawQuery) {
		return u.User, u.Host, u.EscapedPath(), u.RawQuery, nil
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return nil, "", "", "", errors.New("not a valid URL" + hint)
	}
	after := rest[at+1:]
	if strings.Contains(after, "#") {
		return nil, "", "", "", errors.New("PostgreSQL URLs take no #fragment")
	}
	u, err := url.Parse("postgres://" + after)
	if err != nil {
		return nil, "", "", "", errors.New("not a valid URL: the host, port or path after the last '@' is malformed" + hint)
	}
	name, password, hasPassword := strings.Cut(rest[:at], ":")
	if hasPassword {
		user = url.UserPassword(unescapeLenient(name), unescapeLenient(password))
	} else {
		user = url.User(unescapeLenient(name))
	}
	return user, u.Host, u.EscapedPath(), u.RawQuery, nil
}

// atInQueryKey reports whether a query option's name holds an '@', which
// only a misread password puts there.
func atInQueryKey(query string) bool {
	for _, opt := range strings.Split(query, "&") {
		if k, _, _ := strings.Cut(opt, "="); strings.Contains(k, "@") {
			return true
		}
	}
	return false
}

// unescapeLenient %-decodes s, or returns it as written when it holds a
// '%' that starts no escape (a literal "50%off" password).
func unescapeLenient(s string) string {
	if v, err := url.PathUnescape(s); err == nil {
		return v
	}
	return s
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// buildDatabase resolves the database from DATABASE_URL, or DB_DRIVER and
// DATABASE_PATH when DATABASE_URL is unset, and parses the pool settings.
func buildDatabase(s *settings, p *parser) Database {
	var d Database
	switch driver := strings.ToLower(strings.TrimSpace(s.DBDriver.text)); {
	case s.DatabaseURL.set:
	case s.DBDriver.set && driver == "postgres":
		p.problems = append(p.problems, "DB_DRIVER: postgres needs DATABASE_URL (postgres://user:pass@host:5432/db) as well")
	case s.DBDriver.set && driver != "sqlite":
		p.add(s.DBDriver, "must be sqlite or postgres")
	case s.DBDriver.set || s.DatabasePath.set:
		// DATABASE_PATH is a plain file path, not URL-escaped.
		d = Database{Driver: "sqlite", URL: "sqlite:///" + s.DatabasePath.text, Path: s.DatabasePath.text}
	}
	if d.Driver == "" {
		var err error
		if d, err = ParseDatabaseURL(s.DatabaseURL.text); err != nil {
			p.add(s.DatabaseURL, err.Error())
		}
	}
	d.PoolSize = p.integer(s.DatabasePoolSize, 1, 100)
	d.MaxOverflow = p.integer(s.DatabaseMaxOverflow, 0, 100)
	d.PoolTimeout = p.seconds(s.DatabasePoolTimeout)
	d.MaxIdleConns = d.PoolSize
	if s.DatabaseMaxIdleConns.set {
		d.MaxIdleConns = p.integer(s.DatabaseMaxIdleConns, 0, 200)
		if most := d.PoolSize + d.MaxOverflow; d.PoolSize > 0 && d.MaxOverflow >= 0 && d.MaxIdleConns > most {
			p.add(s.DatabaseMaxIdleConns, fmt.Sprintf("must not exceed DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW = %d, "+
				"the most connections the pool opens", most))
		}
	}
	d.ConnMaxLifetime = p.duration(s.DatabaseConnMaxLifetime)
	d.Echo = p.boolean(s.DatabaseEcho)
	d.EchoPool = p.boolean(s.DatabaseEchoPool)
	d.AutoMigrate = p.boolean(s.DatabaseAutoMigrate)
	for _, v := range []value{s.DatabasePoolSize, s.DatabaseMaxOverflow, s.DatabasePoolTimeout,
		s.DatabaseMaxIdleConns, s.DatabaseConnMaxLifetime, s.DatabaseEchoPool} {
		if v.set {
			d.PoolSettings = append(d.PoolSettings, v.from)
		}
	}
	return d
}

// checkRedisURL returns what is wrong with a REDIS_URL, or "".
func checkRedisURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "not a valid URL (percent-encode special characters in the password)"
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "must start with redis:// or rediss://"
	}
	if u.Host == "" {
		return "needs a host, such as redis://:password@redis:6379/0"
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return "the path must be a database number, such as /0"
		}
	}
	return ""
}
