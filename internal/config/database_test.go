package config

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestParseDatabaseURL(t *testing.T) {
	tests := []struct {
		raw  string
		want Database
	}{
		{"sqlite:///./rel/path.db", Database{Driver: "sqlite", URL: "sqlite:///./rel/path.db", Path: "./rel/path.db"}},
		{"sqlite:///rel.db", Database{Driver: "sqlite", URL: "sqlite:///rel.db", Path: "rel.db"}},
		{"sqlite:////abs/path.db", Database{Driver: "sqlite", URL: "sqlite:////abs/path.db", Path: "/abs/path.db"}},
		{"sqlite:///:memory:", Database{Driver: "sqlite", URL: "sqlite:///:memory:", Path: ":memory:"}},
		{"sqlite+aiosqlite:///./var/db/proxy.db", Database{Driver: "sqlite", URL: "sqlite:///./var/db/proxy.db", Path: "./var/db/proxy.db"}},
		{"sqlite+aiosqlite:////data/proxy.db", Database{Driver: "sqlite", URL: "sqlite:////data/proxy.db", Path: "/data/proxy.db"}},
		{"SQLITE:///./my%20db.db", Database{Driver: "sqlite", URL: "sqlite:///./my db.db", Path: "./my db.db"}},
		{"postgres://u:p@h:5432/db", Database{Driver: "postgres", URL: "postgres://u:p@h:5432/db"}},
		{"postgresql://u:p@h/db", Database{Driver: "postgres", URL: "postgres://u:p@h/db"}},
		{"postgresql+asyncpg://u:p@h/db", Database{Driver: "postgres", URL: "postgres://u:p@h/db"}},
		{"postgres://h/db?sslmode=verify-full", Database{Driver: "postgres", URL: "postgres://h/db?sslmode=verify-full"}},
		{"postgresql+asyncpg://u:p@h/db?ssl=require", Database{Driver: "postgres", URL: "postgres://u:p@h/db?sslmode=require"}},
		{"postgresql://h/db?ssl=true&connect_timeout=10", Database{Driver: "postgres", URL: "postgres://h/db?connect_timeout=10&sslmode=require"}},
		{"postgresql://h/db?ssl=false", Database{Driver: "postgres", URL: "postgres://h/db?sslmode=disable"}},
		{"postgresql://h/db?ssl=require&sslmode=require", Database{Driver: "postgres", URL: "postgres://h/db?sslmode=require"}},
		{"postgresql://u:p@/db?host=/var/run/postgresql", Database{Driver: "postgres", URL: "postgres://u:p@/db?host=/var/run/postgresql"}},
		{"postgresql://u:p%40ss@h/db?application_name=a%26b", Database{Driver: "postgres", URL: "postgres://u:p%40ss@h/db?application_name=a%26b"}},
		{"postgres://[::1]:5432/db", Database{Driver: "postgres", URL: "postgres://[::1]:5432/db"}},
	}
	for _, tt := range tests {
		got, err := ParseDatabaseURL(tt.raw)
		if err != nil {
			t.Errorf("ParseDatabaseURL(%q): %v", tt.raw, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseDatabaseURL(%q) (-want +got):\n%s", tt.raw, diff)
		}
	}
}

// TestSeedGuideURLsReachTheDriver feeds every PostgreSQL URL form the seed
// guides print through ParseDatabaseURL and then pgx's own parser, which
// must read the same user, password, host and database from the result; the
// masked forms of both the input and the result must hide the password.
func TestSeedGuideURLsReachTheDriver(t *testing.T) {
	type conn struct {
		User, Password, Host, Database string
		Port                           uint16
		TLSRequired                    bool
		ConnectTimeout                 time.Duration
	}
	tests := []struct {
		raw  string
		want conn
	}{
		{"postgres://app:secret@db:5432/llm", conn{"app", "secret", "db", "llm", 5432, false, 0}},
		{"postgresql://app:secret@db/llm", conn{"app", "secret", "db", "llm", 5432, false, 0}},
		{"postgresql+asyncpg://app:secret@db:5433/llm", conn{"app", "secret", "db", "llm", 5433, false, 0}},
		{"postgres://app:secret@db/llm?sslmode=require", conn{"app", "secret", "db", "llm", 5432, true, 0}},
		{"postgresql+asyncpg://app:secret@db/llm?ssl=require", conn{"app", "secret", "db", "llm", 5432, true, 0}},
		{"postgres://app:secret@db/llm?sslmode=disable&connect_timeout=10", conn{"app", "secret", "db", "llm", 5432, false, 10 * time.Second}},
		{"postgresql://app:secret@/llm?host=/var/run/postgresql", conn{"app", "secret", "/var/run/postgresql", "llm", 5432, false, 0}},
		// Azure Database for PostgreSQL (single server): user@server.
		{"postgres://user@server:secret@server.postgres.database.azure.com:5432/db?sslmode=require",
			conn{"user@server", "secret", "server.postgres.database.azure.com", "db", 5432, true, 0}},
		{"postgresql+asyncpg://user@server:secret@server.postgres.database.azure.com/db?ssl=require",
			conn{"user@server", "secret", "server.postgres.database.azure.com", "db", 5432, true, 0}},
		// Passwords as generated, unescaped.
		{"postgres://app:se@cret@db/llm", conn{"app", "se@cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:se:cret@db/llm", conn{"app", "se:cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:se/cret@db/llm", conn{"app", "se/cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:se#cret@db/llm", conn{"app", "se#cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:se?cret@db/llm?sslmode=require", conn{"app", "se?cret", "db", "llm", 5432, true, 0}},
		{"postgres://app:12?cret@db/llm", conn{"app", "12?cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:1#cret@db/llm", conn{"app", "1#cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:50%cret@db/llm", conn{"app", "50%cret", "db", "llm", 5432, false, 0}},
		{"postgres://app:s@c:r/e#t?%x@db:5432/llm?sslmode=require", conn{"app", "s@c:r/e#t?%x", "db", "llm", 5432, true, 0}},
		{"postgres://user@server:s@c:r/e#t@server.postgres.database.azure.com/db", conn{"user@server", "s@c:r/e#t", "server.postgres.database.azure.com", "db", 5432, false, 0}},
		// Escaped, as a careful guide prints them.
		{"postgres://user%40server:se%40cret@server.postgres.database.azure.com/db", conn{"user@server", "se@cret", "server.postgres.database.azure.com", "db", 5432, false, 0}},
		{"postgres://app:se%2Fcret%23@db/llm", conn{"app", "se/cret#", "db", "llm", 5432, false, 0}},
		// An '@' in a query value is not a password.
		{"postgres://app:secret@db/llm?application_name=me@work", conn{"app", "secret", "db", "llm", 5432, false, 0}},
	}
	for _, tt := range tests {
		d, err := ParseDatabaseURL(tt.raw)
		if err != nil {
			t.Errorf("ParseDatabaseURL(%q): %v", MaskURL(tt.raw), err)
			continue
		}
		cfg, err := pgconn.ParseConfig(d.URL)
		if err != nil {
			t.Errorf("%q normalised to %q, which pgx refuses: %v", MaskURL(tt.raw), d.Masked(), err)
			continue
		}
		tlsRequired := cfg.TLSConfig != nil
		for _, fb := range cfg.Fallbacks {
			tlsRequired = tlsRequired && fb.TLSConfig != nil
		}
		got := conn{cfg.User, cfg.Password, cfg.Host, cfg.Database, cfg.Port, tlsRequired, cfg.ConnectTimeout}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%q: pgx reads (-want +got):\n%s", MaskURL(tt.raw), diff)
		}
		for _, masked := range []string{MaskURL(tt.raw), d.Masked()} {
			if strings.Contains(masked, tt.want.Password) || !strings.Contains(masked, ":***@") {
				t.Errorf("%q: masked as %q", tt.raw, masked)
			}
		}
	}
}

// TestDatabaseURLThroughLoad checks that every source accepts the URL forms
// and that the pool settings are filled in around them.
func TestDatabaseURLThroughLoad(t *testing.T) {
	for _, raw := range []string{"sqlite+aiosqlite:///./x.db", "postgresql+asyncpg://u:p@h/db?ssl=require", "postgresql://u:p@/db?host=/tmp"} {
		want, err := ParseDatabaseURL(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range []string{"env", "flag", "yaml"} {
			clearEnv(t)
			var args []string
			switch src {
			case "env":
				t.Setenv("DATABASE_URL", raw)
			case "flag":
				args = []string{"--database-url", raw}
			case "yaml":
				t.Setenv("MY_DB", raw)
				args = []string{"--config", writeYAML(t, "database:\n  url: ${MY_DB}\n")}
			}
			c, _ := mustLoad(t, args...)
			if c.Database.URL != want.URL || c.Database.Driver != want.Driver || c.Database.PoolSize != 5 {
				t.Errorf("%s %q: got %+v, want URL %q", src, raw, c.Database, want.URL)
			}
		}
	}
}

func TestParseDatabaseURLRejects(t *testing.T) {
	tests := []struct {
		raw  string
		want string
	}{
		{"mysql://x", `unsupported scheme "mysql"`},
		{"./var/db/proxy.db", "must be a URL"},
		{"", "must be a URL"},
		{"sqlite://host/x.db", "no host"},
		{"sqlite:///", "no SQLite file path"},
		{"sqlite://", "no host"},
		{"sqlite:///x.db?mode=ro", "no query options"},
		{"sqlite:///x%zz.db", "invalid %-escape"},
		{"postgres://u:pw@h/db?sslmode=bogus", "sslmode must be"},
		{"postgres://u:pw@h/db?ssl=maybe", "ssl must be"},
		{"postgres://u:pw@h/db?ssl=require&sslmode=disable", "disagree"},
		{"postgres://u:pw@h/db?connect_timeout=soon", "connect_timeout"},
		{"postgres://u:pw@h:port/db", "not a valid URL"},
		{"postgres://u:pw/x@h:port/db", "malformed"},
		{"postgres://u:pw@h/db#frag", "fragment"},
	}
	for _, tt := range tests {
		_, err := ParseDatabaseURL(tt.raw)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseDatabaseURL(%q) = %v, want error containing %q", tt.raw, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "pw") {
			t.Errorf("ParseDatabaseURL(%q) error leaks the password: %v", tt.raw, err)
		}
	}
}

func TestDatabaseURLProblemIsMasked(t *testing.T) {
	for _, raw := range []string{"postgres://app:pa/ss@db:port/llm", "postgres://app:hunter2@db/llm?sslmode=nope", "mysql://root:hunter2@db/x"} {
		clearEnv(t)
		t.Setenv("DATABASE_URL", raw)
		_, _, err := Load("proxy", nil, &bytes.Buffer{})
		got := problems(t, err)
		if len(got) != 1 || !strings.HasPrefix(got[0], "DATABASE_URL: ") || !strings.Contains(got[0], ":***@") {
			t.Errorf("%q: problems = %q, want one naming DATABASE_URL with the masked URL", MaskURL(raw), got)
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "pa/ss") {
			t.Errorf("problem leaks the password: %v", err)
		}
	}
}

func TestMaskURL(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"postgres://user:secret@host/db", "postgres://user:***@host/db"},
		{"postgresql+asyncpg://user:secret@host:5432/db?ssl=require", "postgresql+asyncpg://user:***@host:5432/db?ssl=require"},
		{"postgres://user@host/db", "postgres://user@host/db"},
		{"postgres://host/db", "postgres://host/db"},
		{"postgres://u:p%40ss@host/db", "postgres://u:***@host/db"},
		{"postgres://u:@host/db", "postgres://u:***@host/db"},
		{"postgresql://u:secret@/db?host=/var/run/postgresql", "postgresql://u:***@/db?host=/var/run/postgresql"},
		{"postgres://host/db?user=u&password=secret&sslmode=require", "postgres://host/db?user=u&password=***&sslmode=require"},
		{"postgres://host/db?application_name=me@work", "postgres://host/db?application_name=me@work"},
		{"redis://:secret@redis:6379/0", "redis://:***@redis:6379/0"},
		{"rediss://default:secret@redis:6380", "rediss://default:***@redis:6380"},
		{"redis://redis:6379", "redis://redis:6379"},
		{"sqlite:///./var/db/proxy.db", "sqlite:///./var/db/proxy.db"},
		// Malformed: an unescaped '/', '#' or '?' in the password.
		{"postgres://u:sec/ret@host/db", "postgres://u:***@host/db"},
		{"postgres://u:12/ret@host/db", "postgres://u:***@host/db"},
		{"postgres://u:se#cret@host/db", "postgres://u:***@host/db"},
		{"postgres://u:se?cret@host/db", "postgres://u:***@host/db"},
		{"postgres://u:se%zzcret@host/db", "postgres://u:***@host/db"},
		// Not a URL at all: keyword/value DSN.
		{"host=db user=u password=secret dbname=x", "host=db user=u password=*** dbname=x"},
		{"host=db password='sec ret'", "host=db password=***"},
		{"", ""},
	}
	for _, tt := range tests {
		got := MaskURL(tt.raw)
		if got != tt.want {
			t.Errorf("MaskURL(%q) = %q, want %q", tt.raw, got, tt.want)
		}
		for _, secret := range []string{"secret", "sec/ret", "12/ret", "cret", "p%40ss"} {
			if strings.Contains(got, secret) {
				t.Errorf("MaskURL(%q) = %q still contains %q", tt.raw, got, secret)
			}
		}
	}
}
