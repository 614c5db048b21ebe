package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clearEnv unsets every setting's env var for the test (an empty value counts
// as unset) so the developer's environment cannot leak in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, f := range fields() {
		t.Setenv(f.env, "")
	}
}

func setEnv(t *testing.T, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		t.Setenv(k, v)
	}
}

func writeYAML(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t *testing.T, args ...string) (*Config, []string) {
	t.Helper()
	c, rest, err := Load("proxy", args, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Load(%q): %v", args, err)
	}
	return c, rest
}

func problems(t *testing.T, err error) []string {
	t.Helper()
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error = %v, want *config.Error", err)
	}
	return cerr.Problems
}

const testKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // base64("0123456789abcdef0123456789abcdef")

func TestDefaults(t *testing.T) {
	clearEnv(t)
	got, rest := mustLoad(t)
	want := &Config{
		Database: Database{
			Driver: "sqlite", URL: "sqlite:///./var/db/proxy.db", Path: "./var/db/proxy.db",
			PoolSize: 5, MaxOverflow: 10, PoolTimeout: 30 * time.Second, MaxIdleConns: 5,
			ConnMaxLifetime: time.Hour, AutoMigrate: true,
		},
		ListenAddr:          ":8080",
		UpstreamTimeout:     10 * time.Minute,
		MaxRequestBytes:     10 << 20,
		ShutdownGrace:       30 * time.Second,
		DrainDelay:          5 * time.Second,
		AuthCacheTTL:        5 * time.Second,
		RequestBodyTimeout:  time.Minute,
		UpstreamIdleTimeout: 5 * time.Minute,
		AuthFailureLimit:    20,
		Console:             Console{SessionIdle: 30 * time.Minute, SessionMax: 12 * time.Hour},
		CacheMaxBytes:       64 << 20,
		CacheMaxEntryBytes:  1 << 20,
		UsageBatchSize:      500,
		UsageFlushInterval:  time.Second,
		UsageBufferSize:     100000,
		RedisKeyPrefix:      "llmproxy:",
		RedisTimeout:        50 * time.Millisecond,
		RedisDialTimeout:    time.Second,
		Retention:           Retention{Usage: 2160 * time.Hour, Audit: 8760 * time.Hour, Tokens: 720 * time.Hour, Interval: time.Hour},
		SSO:                 SSO{TokenTTL: 720 * time.Hour, StartLimit: 20},
		Memory: Memory{IdleTimeout: 30 * time.Minute, MaxInject: 3, MinScore: 0.3, MaxBytes: 65536, RedactDefault: true,
			RetentionDays: 90},
		LogLevel:  "info",
		LogFormat: "json",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if len(rest) != 0 {
		t.Errorf("positional = %q, want none", rest)
	}
}

func TestEverySettingFromEnv(t *testing.T) {
	clearEnv(t)
	setEnv(t, map[string]string{
		"DATABASE_URL":               "postgresql+asyncpg://app:pw@db:5432/llm?ssl=require",
		"DATABASE_POOL_SIZE":         "20",
		"DATABASE_MAX_OVERFLOW":      "0",
		"DATABASE_POOL_TIMEOUT":      "7",
		"DATABASE_MAX_IDLE_CONNS":    "3",
		"DATABASE_CONN_MAX_LIFETIME": "15m",
		"DATABASE_ECHO":              "true",
		"DATABASE_ECHO_POOL":         "1",
		"DATABASE_AUTO_MIGRATE":      "false",
		"LISTEN_ADDR":                "127.0.0.1:9000",
		"MANAGEMENT_TOKEN":           "mgmt-secret-token",
		"ENCRYPTION_KEY":             testKey,
		"REDIS_URL":                  "rediss://:rpw@redis:6380/2",
		"REDIS_FAIL_OPEN":            "true",
		"REDIS_KEY_PREFIX":           "team-a:",
		"REDIS_POOL_SIZE":            "32",
		"REDIS_TIMEOUT":              "80ms",
		"REDIS_DIAL_TIMEOUT":         "2s",
		"USAGE_RETENTION_DAYS":       "0",
		"AUDIT_RETENTION_DAYS":       "2",
		"RETENTION_TOKENS":           "24h",
		"RETENTION_INTERVAL":         "10m",
		"UPSTREAM_TIMEOUT":           "2m",
		"MAX_REQUEST_BYTES":          "2048",
		"SHUTDOWN_GRACE":             "45s",
		"DRAIN_DELAY":                "0s",
		"AUTH_CACHE_TTL":             "10s",
		"REQUEST_BODY_TIMEOUT":       "3s",
		"UPSTREAM_IDLE_TIMEOUT":      "30s",
		"AUTH_FAILURE_LIMIT":         "5",
		"TRUSTED_PROXIES":            "fd00::/8",
		"METRICS_TOKEN":              "metrics-secret",
		"CONSOLE_ENABLED":            "true",
		"CONSOLE_SESSION_IDLE":       "10m",
		"CONSOLE_SESSION_MAX":        "1h",
		"CONSOLE_ADMINS":             " Ada@Example.com, ,@corp.example",
		"CACHE_MAX_BYTES":            "0",
		"CACHE_MAX_ENTRY_BYTES":      "4096",
		"USAGE_BATCH_SIZE":           "100",
		"USAGE_FLUSH_INTERVAL":       "250ms",
		"USAGE_BUFFER_SIZE":          "1000",
		"MEMORY_ENABLED":             "true",
		"MEMORY_IDLE_TIMEOUT":        "5m",
		"MEMORY_SUMMARY_MODEL":       "gpt-4o-mini",
		"MEMORY_MAX_INJECT":          "2",
		"MEMORY_MIN_SCORE":           "0.5",
		"MEMORY_MAX_BYTES":           "4096",
		"MEMORY_REDACT":              "secret-[0-9]+\ndefault",
		"MEMORY_RETENTION_DAYS":      "7",
		"LOG_LEVEL":                  "DEBUG",
		"LOG_FORMAT":                 "text",
		"SSO_ISSUER":                 "https://idp.example.com/realms/x",
		"SSO_CLIENT_ID":              "llm-proxy",
		"SSO_CLIENT_SECRET":          "client-secret",
		"SSO_ALLOWED_DOMAINS":        " Example.COM ,,corp.example",
		"SSO_PROJECT":                "agents",
		"SSO_TOKEN_TTL":              "48h",
		"SSO_START_LIMIT":            "0",
		"PUBLIC_URL":                 "https://llm.example.com/",
	})
	got, _ := mustLoad(t)
	want := &Config{
		Database: Database{
			Driver: "postgres", URL: "postgres://app:pw@db:5432/llm?sslmode=require",
			PoolSize: 20, MaxOverflow: 0, PoolTimeout: 7 * time.Second, MaxIdleConns: 3,
			ConnMaxLifetime: 15 * time.Minute, Echo: true, EchoPool: true, AutoMigrate: false,
			PoolSettings: []string{"DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW", "DATABASE_POOL_TIMEOUT",
				"DATABASE_MAX_IDLE_CONNS", "DATABASE_CONN_MAX_LIFETIME", "DATABASE_ECHO_POOL"},
		},
		ListenAddr:       "127.0.0.1:9000",
		ManagementToken:  "mgmt-secret-token",
		EncryptionKey:    []byte("0123456789abcdef0123456789abcdef"),
		RedisURL:         "rediss://:rpw@redis:6380/2",
		RedisFailOpen:    true,
		RedisKeyPrefix:   "team-a:",
		RedisPoolSize:    32,
		RedisTimeout:     80 * time.Millisecond,
		RedisDialTimeout: 2 * time.Second,
		Retention:        Retention{Usage: 0, Audit: 48 * time.Hour, Tokens: 24 * time.Hour, Interval: 10 * time.Minute},
		Memory: Memory{Enabled: true, IdleTimeout: 5 * time.Minute, SummaryModel: "gpt-4o-mini", MaxInject: 2,
			MinScore: 0.5, MaxBytes: 4096, Redact: []string{"secret-[0-9]+"}, RedactDefault: true, RetentionDays: 7},
		UpstreamTimeout:     2 * time.Minute,
		MaxRequestBytes:     2048,
		ShutdownGrace:       45 * time.Second,
		DrainDelay:          0,
		AuthCacheTTL:        10 * time.Second,
		RequestBodyTimeout:  3 * time.Second,
		UpstreamIdleTimeout: 30 * time.Second,
		AuthFailureLimit:    5,
		TrustedProxies:      []netip.Prefix{netip.MustParsePrefix("fd00::/8")},
		MetricsToken:        "metrics-secret",
		Console: Console{Enabled: true, SessionIdle: 10 * time.Minute, SessionMax: time.Hour,
			Admins: []string{"ada@example.com", "@corp.example"}},
		CacheMaxEntryBytes: 4096,
		UsageBatchSize:     100,
		UsageFlushInterval: 250 * time.Millisecond,
		UsageBufferSize:    1000,
		SSO: SSO{Issuer: "https://idp.example.com/realms/x", ClientID: "llm-proxy", ClientSecret: "client-secret",
			RedirectURL: "https://llm.example.com/auth/callback", AllowedDomains: []string{"example.com", "corp.example"},
			Project: "agents", TokenTTL: 48 * time.Hour},
		PublicURL: "https://llm.example.com",
		LogLevel:  "debug",
		LogFormat: "text",
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestPrecedence(t *testing.T) {
	yaml := "listen_addr: \":1111\"\ndatabase:\n  pool_size: 11\nlog:\n  level: warn\n"
	tests := []struct {
		name      string
		useFile   bool
		env       map[string]string
		args      []string
		wantAddr  string
		wantPool  int
		wantLevel string
	}{
		{name: "defaults", wantAddr: ":8080", wantPool: 5, wantLevel: "info"},
		{name: "yaml over defaults", useFile: true, wantAddr: ":1111", wantPool: 11, wantLevel: "warn"},
		{
			name: "env over yaml", useFile: true,
			env:      map[string]string{"LISTEN_ADDR": ":2222", "DATABASE_POOL_SIZE": "22"},
			wantAddr: ":2222", wantPool: 22, wantLevel: "warn",
		},
		{
			name: "flag over env and yaml", useFile: true,
			env:      map[string]string{"LISTEN_ADDR": ":2222", "DATABASE_POOL_SIZE": "22", "LOG_LEVEL": "error"},
			args:     []string{"--listen-addr", ":3333", "--database-pool-size=33"},
			wantAddr: ":3333", wantPool: 33, wantLevel: "error",
		},
		{
			name:     "flag over default",
			args:     []string{"-log-level", "debug"},
			wantAddr: ":8080", wantPool: 5, wantLevel: "debug",
		},
		{
			name: "empty env counts as unset", useFile: true,
			env:      map[string]string{"LISTEN_ADDR": "", "DATABASE_POOL_SIZE": ""},
			wantAddr: ":1111", wantPool: 11, wantLevel: "warn",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tt.env)
			args := tt.args
			if tt.useFile {
				args = append([]string{"--config", writeYAML(t, yaml)}, args...)
			}
			c, _ := mustLoad(t, args...)
			got := []any{c.ListenAddr, c.Database.PoolSize, c.LogLevel}
			want := []any{tt.wantAddr, tt.wantPool, tt.wantLevel}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigFileFromEnvAndFlag(t *testing.T) {
	clearEnv(t)
	envFile := writeYAML(t, "listen_addr: \":4444\"\n")
	flagFile := writeYAML(t, "listen_addr: \":5555\"\n")
	t.Setenv("CONFIG_FILE", envFile)

	c, _ := mustLoad(t)
	if c.ListenAddr != ":4444" || c.ConfigFile != envFile {
		t.Errorf("CONFIG_FILE: addr %q file %q, want :4444 %q", c.ListenAddr, c.ConfigFile, envFile)
	}
	c, _ = mustLoad(t, "--config", flagFile)
	if c.ListenAddr != ":5555" || c.ConfigFile != flagFile {
		t.Errorf("--config: addr %q file %q, want :5555 %q", c.ListenAddr, c.ConfigFile, flagFile)
	}
}

func TestEveryYAMLKey(t *testing.T) {
	clearEnv(t)
	path := writeYAML(t, `
database:
  url: postgresql://u:p@/llm?host=/var/run/postgresql
  pool_size: 8
  max_overflow: 2
  pool_timeout: 1m
  max_idle_conns: 4
  conn_max_lifetime: 2h
  echo: true
  echo_pool: true
  auto_migrate: false
listen_addr: ":7000"
management_token: tok
encryption_key: `+testKey+`
redis:
  url: redis://redis:6379/1
  fail_open: true
  key_prefix: "b:"
  pool_size: 4
  timeout: 30ms
  dial_timeout: 3s
retention:
  usage_days: 30
  audit_days: 0
  tokens: 1h
  interval: 5m
upstream_timeout: 90s
max_request_bytes: 4096
shutdown_grace: 20s
drain_delay: 1s
auth_cache_ttl: 2s
request_body_timeout: 15s
upstream_idle_timeout: 2m
auth_failure_limit: 7
trusted_proxies: "10.0.0.0/8, 192.168.1.10"
metrics_token: mtok
console:
  enabled: true
  session_idle: 5m
  session_max: 2h
  admins: grace@a.example
cache:
  max_bytes: 1000000
  max_entry_bytes: 2000
usage:
  batch_size: 50
  flush_interval: 3s
  buffer_size: 500
sso:
  issuer: http://127.0.0.1:9999
  client_id: cid
  client_secret: cs
  redirect_url: http://127.0.0.1:8080/auth/callback
  allowed_domains: a.example
  project: p
  token_ttl: 1h
  start_limit: 5
public_url: http://127.0.0.1:8080
memory:
  enabled: true
  idle_timeout: 1h
  summary_model: m
  max_inject: 0
  min_score: 0
  max_bytes: 2048
  redact: |
    key-[a-z]+
  retention_days: 0
log:
  level: warn
  format: text
`)
	got, _ := mustLoad(t, "--config", path)
	want := &Config{
		Database: Database{
			Driver: "postgres", URL: "postgres://u:p@/llm?host=/var/run/postgresql",
			PoolSize: 8, MaxOverflow: 2, PoolTimeout: time.Minute, MaxIdleConns: 4,
			ConnMaxLifetime: 2 * time.Hour, Echo: true, EchoPool: true,
			PoolSettings: []string{"database.pool_size in " + path, "database.max_overflow in " + path, "database.pool_timeout in " + path,
				"database.max_idle_conns in " + path, "database.conn_max_lifetime in " + path, "database.echo_pool in " + path},
		},
		ListenAddr:       ":7000",
		ManagementToken:  "tok",
		EncryptionKey:    []byte("0123456789abcdef0123456789abcdef"),
		RedisURL:         "redis://redis:6379/1",
		RedisFailOpen:    true,
		RedisKeyPrefix:   "b:",
		RedisPoolSize:    4,
		RedisTimeout:     30 * time.Millisecond,
		RedisDialTimeout: 3 * time.Second,
		Retention:        Retention{Usage: 720 * time.Hour, Tokens: time.Hour, Interval: 5 * time.Minute},
		Memory: Memory{Enabled: true, IdleTimeout: time.Hour, SummaryModel: "m", MaxBytes: 2048,
			Redact: []string{"key-[a-z]+"}},
		UpstreamTimeout:     90 * time.Second,
		MaxRequestBytes:     4096,
		ShutdownGrace:       20 * time.Second,
		DrainDelay:          time.Second,
		AuthCacheTTL:        2 * time.Second,
		RequestBodyTimeout:  15 * time.Second,
		UpstreamIdleTimeout: 2 * time.Minute,
		AuthFailureLimit:    7,
		TrustedProxies:      []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.10/32")},
		MetricsToken:        "mtok",
		Console:             Console{Enabled: true, SessionIdle: 5 * time.Minute, SessionMax: 2 * time.Hour, Admins: []string{"grace@a.example"}},
		CacheMaxBytes:       1000000,
		CacheMaxEntryBytes:  2000,
		UsageBatchSize:      50,
		UsageFlushInterval:  3 * time.Second,
		UsageBufferSize:     500,
		SSO: SSO{Issuer: "http://127.0.0.1:9999", ClientID: "cid", ClientSecret: "cs", RedirectURL: "http://127.0.0.1:8080/auth/callback",
			AllowedDomains: []string{"a.example"}, Project: "p", TokenTTL: time.Hour, StartLimit: 5},
		PublicURL:  "http://127.0.0.1:8080",
		LogLevel:   "warn",
		LogFormat:  "text",
		ConfigFile: path,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestYAMLExpansion(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		yaml string
		want string // resulting listen address
	}{
		{name: "set variable", env: map[string]string{"TEST_ADDR": ":6001"}, yaml: `listen_addr: "${TEST_ADDR}"`, want: ":6001"},
		{name: "default used when unset", yaml: `listen_addr: "${TEST_ADDR:-:6002}"`, want: ":6002"},
		{name: "default used when empty", env: map[string]string{"TEST_ADDR": ""}, yaml: `listen_addr: "${TEST_ADDR:-:6003}"`, want: ":6003"},
		{name: "default ignored when set", env: map[string]string{"TEST_ADDR": ":6004"}, yaml: `listen_addr: "${TEST_ADDR:-:9}"`, want: ":6004"},
		{name: "unset without default falls back to the built-in default", yaml: `listen_addr: "${TEST_ADDR}"`, want: ":8080"},
		{name: "embedded in text", env: map[string]string{"TEST_PORT": "6005"}, yaml: `listen_addr: "127.0.0.1:${TEST_PORT}"`, want: "127.0.0.1:6005"},
		{name: "bare dollar left alone", yaml: "management_token: a$b\nlisten_addr: \":6006\"", want: ":6006"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("TEST_ADDR", "")
			if err := os.Unsetenv("TEST_ADDR"); err != nil {
				t.Fatal(err)
			}
			setEnv(t, tt.env)
			c, _ := mustLoad(t, "--config", writeYAML(t, tt.yaml))
			if c.ListenAddr != tt.want {
				t.Errorf("ListenAddr = %q, want %q", c.ListenAddr, tt.want)
			}
		})
	}
}

func TestExpandKeepsDollarToken(t *testing.T) {
	lookup := func(k string) string { return map[string]string{"A": "x"}[k] }
	tests := map[string]string{
		"${A}":         "x",
		"${A:-d}":      "x",
		"${B:-d}":      "d",
		"${B}":         "",
		"${B:-}":       "",
		"p$A${A}":      "p$Ax",
		"${unclosed":   "${unclosed",
		"${A}-${B:-y}": "x-y",
	}
	for in, want := range tests {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestYAMLStrictness(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings, one per expected problem
	}{
		{
			name: "unknown keys top level and nested, all reported",
			yaml: "listen_adr: \":1\"\ndatabase:\n  pool_sise: 3\n  url: sqlite:///x.db\nredis:\n  host: r\n",
			want: []string{"listen_adr in ", "database.pool_sise in ", "redis.host in "},
		},
		{name: "section given a scalar", yaml: "database: 5\n", want: []string{"database in "}},
		{name: "setting given a list", yaml: "listen_addr: [a, b]\n", want: []string{"listen_addr in "}},
		{name: "not YAML", yaml: "listen_addr: [\n", want: []string{"not valid YAML"}},
		{name: "bad value named by key", yaml: "database:\n  pool_size: 0\n", want: []string{"database.pool_size in "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			_, _, err := Load("proxy", []string{"--config", writeYAML(t, tt.yaml)}, &bytes.Buffer{})
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("problems = %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestEmptyAndNullYAML(t *testing.T) {
	for _, text := range []string{"", "# nothing\n", "database:\n", "database:\n  url: ~\n  pool_size:\n"} {
		clearEnv(t)
		c, _ := mustLoad(t, "--config", writeYAML(t, text))
		if c.Database.URL != "sqlite:///./var/db/proxy.db" || c.Database.PoolSize != 5 {
			t.Errorf("yaml %q: got %+v, want defaults", text, c.Database)
		}
	}
}

func TestMissingConfigFile(t *testing.T) {
	clearEnv(t)
	t.Setenv("CONFIG_FILE", filepath.Join(t.TempDir(), "absent.yaml"))
	_, _, err := Load("proxy", nil, &bytes.Buffer{})
	got := problems(t, err)
	if len(got) != 1 || !strings.HasPrefix(got[0], "CONFIG_FILE: ") {
		t.Errorf("problems = %q, want one naming CONFIG_FILE", got)
	}
}

// TestRangeChecks covers every check: each bad value gives exactly one
// problem, which names the setting.
func TestRangeChecks(t *testing.T) {
	tests := []struct {
		env, value string
		want       string // the problem must start with this
	}{
		{"DATABASE_POOL_SIZE", "0", "DATABASE_POOL_SIZE: "},
		{"DATABASE_POOL_SIZE", "101", "DATABASE_POOL_SIZE: "},
		{"DATABASE_POOL_SIZE", "abc", "DATABASE_POOL_SIZE: "},
		{"DATABASE_MAX_OVERFLOW", "101", "DATABASE_MAX_OVERFLOW: "},
		{"DATABASE_MAX_OVERFLOW", "-1", "DATABASE_MAX_OVERFLOW: "},
		{"DATABASE_POOL_TIMEOUT", "0", "DATABASE_POOL_TIMEOUT: "},
		{"DATABASE_POOL_TIMEOUT", "-5s", "DATABASE_POOL_TIMEOUT: "},
		{"DATABASE_POOL_TIMEOUT", "soon", "DATABASE_POOL_TIMEOUT: "},
		{"DATABASE_MAX_IDLE_CONNS", "16", "DATABASE_MAX_IDLE_CONNS: "},
		{"DATABASE_MAX_IDLE_CONNS", "-1", "DATABASE_MAX_IDLE_CONNS: "},
		{"DATABASE_CONN_MAX_LIFETIME", "0s", "DATABASE_CONN_MAX_LIFETIME: "},
		{"DATABASE_CONN_MAX_LIFETIME", "3600", "DATABASE_CONN_MAX_LIFETIME: "},
		{"DATABASE_ECHO", "maybe", "DATABASE_ECHO: "},
		{"DATABASE_ECHO_POOL", "2", "DATABASE_ECHO_POOL: "},
		{"DATABASE_AUTO_MIGRATE", "yes please", "DATABASE_AUTO_MIGRATE: "},
		{"DATABASE_URL", "mysql://x", "DATABASE_URL: "},
		{"DB_DRIVER", "mysql", "DB_DRIVER: "},
		{"DB_DRIVER", "postgres", "DB_DRIVER: "},
		{"LISTEN_ADDR", "8080", "LISTEN_ADDR: "},
		{"ENCRYPTION_KEY", "c2hvcnQ=", "ENCRYPTION_KEY: "},
		{"ENCRYPTION_KEY", "not base64!", "ENCRYPTION_KEY: "},
		{"REDIS_URL", "http://redis:6379", "REDIS_URL: "},
		{"REDIS_URL", "redis:///0", "REDIS_URL: "},
		{"REDIS_URL", "redis://r:6379/x", "REDIS_URL: "},
		{"REDIS_FAIL_OPEN", "open", "REDIS_FAIL_OPEN: "},
		{"UPSTREAM_TIMEOUT", "10", "UPSTREAM_TIMEOUT: "},
		{"UPSTREAM_TIMEOUT", "0s", "UPSTREAM_TIMEOUT: "},
		{"MAX_REQUEST_BYTES", "0", "MAX_REQUEST_BYTES: "},
		{"MAX_REQUEST_BYTES", "10MB", "MAX_REQUEST_BYTES: "},
		{"SHUTDOWN_GRACE", "-1s", "SHUTDOWN_GRACE: "},
		{"DRAIN_DELAY", "-1s", "DRAIN_DELAY: "},
		{"AUTH_CACHE_TTL", "0", "AUTH_CACHE_TTL: "},
		{"CACHE_MAX_BYTES", "-1", "CACHE_MAX_BYTES: "},
		{"CACHE_MAX_BYTES", "64MiB", "CACHE_MAX_BYTES: "},
		{"CACHE_MAX_ENTRY_BYTES", "0", "CACHE_MAX_ENTRY_BYTES: "},
		{"CACHE_MAX_ENTRY_BYTES", "1073741825", "CACHE_MAX_ENTRY_BYTES: "},
		{"USAGE_BATCH_SIZE", "0", "USAGE_BATCH_SIZE: "},
		{"USAGE_BATCH_SIZE", "10001", "USAGE_BATCH_SIZE: "},
		{"TRUSTED_PROXIES", "10.0.0.0/8, not-a-cidr", "TRUSTED_PROXIES: must be a comma list of CIDRs"},
		{"AUTH_FAILURE_LIMIT", "0", "AUTH_FAILURE_LIMIT: "},
		{"REQUEST_BODY_TIMEOUT", "0s", "REQUEST_BODY_TIMEOUT: "},
		{"USAGE_FLUSH_INTERVAL", "0s", "USAGE_FLUSH_INTERVAL: "},
		{"USAGE_BUFFER_SIZE", "499", "USAGE_BUFFER_SIZE: "},
		{"USAGE_BUFFER_SIZE", "0", "USAGE_BUFFER_SIZE: "},
		{"LOG_LEVEL", "verbose", "LOG_LEVEL: "},
		{"LOG_FORMAT", "xml", "LOG_FORMAT: "},
		{"CONSOLE_ENABLED", "true", "CONSOLE_ENABLED: the console signs in with the management token"},
		{"CONSOLE_ENABLED", "on", "CONSOLE_ENABLED: "},
		{"CONSOLE_SESSION_IDLE", "0s", "CONSOLE_SESSION_IDLE: "},
		{"CONSOLE_SESSION_IDLE", "13h", "CONSOLE_SESSION_IDLE: must not exceed CONSOLE_SESSION_MAX"},
		{"CONSOLE_SESSION_MAX", "-1h", "CONSOLE_SESSION_MAX: "},
		{"CONSOLE_ADMINS", "ada@example.com", "CONSOLE_ADMINS: people sign in to the console by SSO: set SSO_ISSUER"},
		{"MEMORY_ENABLED", "yes please", "MEMORY_ENABLED: "},
		{"MEMORY_IDLE_TIMEOUT", "0s", "MEMORY_IDLE_TIMEOUT: "},
		{"MEMORY_MAX_INJECT", "21", "MEMORY_MAX_INJECT: "},
		{"MEMORY_MIN_SCORE", "NaN", "MEMORY_MIN_SCORE: "},
		{"MEMORY_MIN_SCORE", "-0.1", "MEMORY_MIN_SCORE: "},
		{"MEMORY_MAX_BYTES", "1023", "MEMORY_MAX_BYTES: "},
		{"MEMORY_REDACT", "default\nsk-(", "MEMORY_REDACT: pattern \"sk-(\" is not a valid regular expression"},
		{"MEMORY_RETENTION_DAYS", "-1", "MEMORY_RETENTION_DAYS: "},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tt.env, tt.value)
			_, _, err := Load("proxy", nil, &bytes.Buffer{})
			got := problems(t, err)
			if len(got) != 1 || !strings.HasPrefix(got[0], tt.want) {
				t.Fatalf("problems = %q, want one starting with %q", got, tt.want)
			}
		})
	}
}

func TestRangeBoundsAccepted(t *testing.T) {
	tests := map[string]string{
		"DATABASE_POOL_SIZE":      "100",
		"DATABASE_MAX_OVERFLOW":   "100",
		"DATABASE_MAX_IDLE_CONNS": "0",
		"DATABASE_POOL_TIMEOUT":   "0.5",
		"USAGE_BATCH_SIZE":        "10000",
		"USAGE_BUFFER_SIZE":       "10000",
		"DRAIN_DELAY":             "0s",
		"CACHE_MAX_BYTES":         "0",
		"CACHE_MAX_ENTRY_BYTES":   "1073741824",
	}
	for env, v := range tests {
		clearEnv(t)
		t.Setenv(env, v)
		if _, _, err := Load("proxy", nil, &bytes.Buffer{}); err != nil {
			t.Errorf("%s=%s: %v", env, v, err)
		}
	}
}

func TestProblemSourceNamed(t *testing.T) {
	clearEnv(t)
	path := writeYAML(t, "database:\n  max_overflow: 500\n")
	t.Setenv("DATABASE_POOL_SIZE", "abc")
	_, _, err := Load("proxy", []string{"--config", path, "--log-format", "xml", "--database-url", "mysql://root:hunter2@db/x"}, &bytes.Buffer{})
	got := problems(t, err)
	want := []string{
		`--database-url: unsupported scheme "mysql": use sqlite:/// or postgres:// (got mysql://root:***@db/x)`,
		`DATABASE_POOL_SIZE: must be an integer from 1 to 100 (got "abc")`,
		`database.max_overflow in ` + path + `: must be an integer from 0 to 100 (got "500")`,
		`--log-format: must be one of json, text (got "xml")`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestAllProblemsInOnePass(t *testing.T) {
	clearEnv(t)
	setEnv(t, map[string]string{
		"DATABASE_POOL_SIZE":    "0",
		"DATABASE_MAX_OVERFLOW": "101",
		"DATABASE_URL":          "mysql://x",
		"LOG_LEVEL":             "loud",
		"ENCRYPTION_KEY":        "short",
	})
	_, _, err := Load("proxy", []string{"--no-such-flag", "--database-echo=perhaps", "--upstream-timeout", "forever"}, &bytes.Buffer{})
	got := problems(t, err)
	for _, name := range []string{"-no-such-flag", "DATABASE_URL", "DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW", "--database-echo", "--upstream-timeout", "LOG_LEVEL", "ENCRYPTION_KEY"} {
		found := false
		for _, p := range got {
			found = found || strings.Contains(p, name)
		}
		if !found {
			t.Errorf("no problem names %s; problems:\n%s", name, strings.Join(got, "\n"))
		}
	}
	if len(got) != 8 {
		t.Errorf("got %d problems, want 8:\n%s", len(got), strings.Join(got, "\n"))
	}
	if msg := err.Error(); strings.Count(msg, "\n") != len(got) {
		t.Errorf("Error() should print one problem per line:\n%s", msg)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const (
		dbPassword    = "dbSecretPw"
		redisPassword = "redisSecretPw"
		token         = "mgmtSecretTok"
		badKey        = "keySecretValue"
	)
	clearEnv(t)
	setEnv(t, map[string]string{
		"DATABASE_URL":       "postgres://app:" + dbPassword + "@db/llm?sslmode=bogus",
		"REDIS_URL":          "http://:" + redisPassword + "@redis:6379",
		"MANAGEMENT_TOKEN":   token,
		"ENCRYPTION_KEY":     badKey,
		"DATABASE_POOL_SIZE": "0",
	})
	var usage bytes.Buffer
	_, _, err := Load("proxy", []string{"--management-token", token + "2"}, &usage)
	if err == nil {
		t.Fatal("Load succeeded, want problems")
	}
	if _, _, helpErr := Load("proxy", []string{"--help"}, &usage); !errors.Is(helpErr, flag.ErrHelp) {
		t.Fatalf("--help: err = %v, want flag.ErrHelp", helpErr)
	}
	out := err.Error() + usage.String()
	for _, secret := range []string{dbPassword, redisPassword, token, badKey} {
		if strings.Contains(out, secret) {
			t.Errorf("output contains secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "postgres://app:***@db/llm") || !strings.Contains(out, "http://:***@redis:6379") {
		t.Errorf("URL problems should quote the masked URL:\n%s", out)
	}
}

func TestSSOSettings(t *testing.T) {
	clearEnv(t)
	setEnv(t, map[string]string{"SSO_ISSUER": "http://idp.example.com", "SSO_CLIENT_SECRET": "ssoSecretValue",
		"SSO_REDIRECT_URL": "https://llm.example.com/elsewhere", "PUBLIC_URL": "ftp://x", "SSO_TOKEN_TTL": "-1h", "SSO_START_LIMIT": "-1"})
	_, _, err := Load("proxy", nil, &bytes.Buffer{})
	got := strings.Join(problems(t, err), "\n")
	for _, want := range []string{"SSO_ISSUER: must be the provider's https://", "SSO_CLIENT_ID: required", "SSO_PROJECT: required",
		"SSO_REDIRECT_URL: must be an http(s) URL ending in /auth/callback", "PUBLIC_URL: must be", "SSO_TOKEN_TTL: must be a positive",
		"SSO_START_LIMIT: must be an integer from 0 to 100000"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "ssoSecretValue") {
		t.Errorf("problems print the client secret:\n%s", got)
	}

	clearEnv(t)
	setEnv(t, map[string]string{"SSO_ISSUER": "https://idp.example.com", "SSO_CLIENT_ID": "c", "SSO_PROJECT": "p"})
	_, _, err = Load("proxy", nil, &bytes.Buffer{})
	if got := strings.Join(problems(t, err), "\n"); !strings.Contains(got, "SSO_REDIRECT_URL: required when SSO_ISSUER is set and PUBLIC_URL is not") {
		t.Errorf("without a redirect URL or PUBLIC_URL: %s", got)
	}

	clearEnv(t)
	c, _ := mustLoad(t)
	if c.SSO.Issuer != "" || c.SSO.TokenTTL != 720*time.Hour || c.SSO.StartLimit != 20 {
		t.Errorf("defaults: %+v", c.SSO)
	}
}

func TestConsoleAdmins(t *testing.T) {
	sso := map[string]string{"SSO_ISSUER": "https://idp.example.com", "SSO_CLIENT_ID": "c", "SSO_PROJECT": "p",
		"PUBLIC_URL": "https://llm.example.com", "SSO_ALLOWED_DOMAINS": "example.com"}
	for _, tt := range []struct {
		admins string
		want   []string // the problems must contain these, in order; nil: none
	}{
		{"ada@example.com,@EXAMPLE.com", nil},
		{"ada", []string{`CONSOLE_ADMINS: "ada" is neither an email address nor @domain`}},
		{"ada@", []string{`CONSOLE_ADMINS: "ada@" is neither`}},
		{"a@b@example.com", []string{`CONSOLE_ADMINS: "a@b@example.com" is neither`}},
		{"Ada <ada@example.com>", []string{`CONSOLE_ADMINS: "ada <ada@example.com>" is neither`}},
		{"ada@other.example, @other.example", []string{
			"CONSOLE_ADMINS: ada@other.example is outside SSO_ALLOWED_DOMAINS",
			"CONSOLE_ADMINS: @other.example is outside SSO_ALLOWED_DOMAINS"}},
	} {
		t.Run(tt.admins, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, sso)
			t.Setenv("CONSOLE_ADMINS", tt.admins)
			_, _, err := Load("proxy", nil, &bytes.Buffer{})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("problems = %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("problem %d = %q, want it to start with %q", i, got[i], w)
				}
			}
		})
	}
}

func TestMaskedDatabase(t *testing.T) {
	clearEnv(t)
	t.Setenv("DATABASE_URL", "postgresql://user:s3cr3t@host:5432/db?sslmode=disable")
	c, _ := mustLoad(t)
	if got, want := c.Database.Masked(), "postgres://user:***@host:5432/db?sslmode=disable"; got != want {
		t.Errorf("Masked() = %q, want %q", got, want)
	}
}

func TestDBDriverAndPath(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		wantURL  string
		wantPath string
	}{
		{name: "sqlite driver, default path", env: map[string]string{"DB_DRIVER": "sqlite"}, wantURL: "sqlite:///./var/db/proxy.db", wantPath: "./var/db/proxy.db"},
		{name: "sqlite driver, absolute path", env: map[string]string{"DB_DRIVER": "SQLite", "DATABASE_PATH": "/data/p.db"}, wantURL: "sqlite:////data/p.db", wantPath: "/data/p.db"},
		{name: "path alone implies sqlite", env: map[string]string{"DATABASE_PATH": "data/p%1.db"}, wantURL: "sqlite:///data/p%1.db", wantPath: "data/p%1.db"},
		{name: "memory", env: map[string]string{"DB_DRIVER": "sqlite", "DATABASE_PATH": ":memory:"}, wantURL: "sqlite:///:memory:", wantPath: ":memory:"},
		{
			name:    "DATABASE_URL wins",
			env:     map[string]string{"DB_DRIVER": "sqlite", "DATABASE_PATH": "x.db", "DATABASE_URL": "postgres://h/db"},
			wantURL: "postgres://h/db",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tt.env)
			c, _ := mustLoad(t)
			if c.Database.URL != tt.wantURL || c.Database.Path != tt.wantPath {
				t.Errorf("URL %q path %q, want %q %q", c.Database.URL, c.Database.Path, tt.wantURL, tt.wantPath)
			}
		})
	}
}

// TestPoolSettings: every pool setting given explicitly, even at its
// default, is named so that SQLite can say it ignores it, and by the
// source that set it.
func TestPoolSettings(t *testing.T) {
	explicit := map[string]string{
		"DATABASE_POOL_SIZE":         "5",
		"DATABASE_MAX_OVERFLOW":      "10",
		"DATABASE_POOL_TIMEOUT":      "30",
		"DATABASE_MAX_IDLE_CONNS":    "5",
		"DATABASE_CONN_MAX_LIFETIME": "1h",
		"DATABASE_ECHO_POOL":         "false",
	}
	for env, v := range explicit {
		clearEnv(t)
		t.Setenv(env, v)
		c, _ := mustLoad(t)
		if !slices.Equal(c.Database.PoolSettings, []string{env}) {
			t.Errorf("%s=%s (the default, but explicit): PoolSettings = %q", env, v, c.Database.PoolSettings)
		}
	}
	clearEnv(t)
	c, _ := mustLoad(t, "--database-echo", "--database-echo-pool")
	if !slices.Equal(c.Database.PoolSettings, []string{"--database-echo-pool"}) || !c.Database.Echo {
		t.Errorf("--database-echo --database-echo-pool: PoolSettings %q Echo %v, want [--database-echo-pool] true", c.Database.PoolSettings, c.Database.Echo)
	}
}

func TestPositionalArgs(t *testing.T) {
	tests := []struct {
		args     []string
		wantRest []string
		wantURL  string
	}{
		{args: []string{"down", "2", "--database-url", "sqlite:///a.db"}, wantRest: []string{"down", "2"}, wantURL: "sqlite:///a.db"},
		{args: []string{"--database-url", "sqlite:///a.db", "down", "2"}, wantRest: []string{"down", "2"}, wantURL: "sqlite:///a.db"},
		{args: []string{"down", "--database-url=sqlite:///a.db", "2", "--database-echo"}, wantRest: []string{"down", "2"}, wantURL: "sqlite:///a.db"},
		{args: []string{"up", "--", "--database-url", "x"}, wantRest: []string{"up", "--database-url", "x"}, wantURL: "sqlite:///./var/db/proxy.db"},
		{args: []string{"--database-echo", "history"}, wantRest: []string{"history"}, wantURL: "sqlite:///./var/db/proxy.db"},
	}
	for _, tt := range tests {
		clearEnv(t)
		c, rest, err := Load("migrate", tt.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if diff := cmp.Diff(tt.wantRest, rest); diff != "" || c.Database.URL != tt.wantURL {
			t.Errorf("%q: URL %q want %q; positional (-want +got):\n%s", tt.args, c.Database.URL, tt.wantURL, diff)
		}
	}
}

func TestHelp(t *testing.T) {
	clearEnv(t)
	var usage bytes.Buffer
	c, _, err := LoadWith("migrate", []string{"up", "-h"}, &usage, Options{Flags: func(fs *flag.FlagSet) {
		fs.Duration("wait", time.Minute, "wait for the database")
	}})
	if !errors.Is(err, flag.ErrHelp) || c != nil {
		t.Fatalf("Load -h = %v, %v; want nil, flag.ErrHelp", c, err)
	}
	for _, want := range []string{"--database-url value", "DATABASE_URL", "default sqlite:///./var/db/proxy.db", "--database-echo[=true|false]\n", "--wait", "(default 1m0s)", "DB_DRIVER", "ENCRYPTION_KEY"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, usage.String())
		}
	}
}

func TestHelpListsOnlyTheNamedSettings(t *testing.T) {
	var usage bytes.Buffer
	_, _, err := LoadWith("migrate", []string{"--help"}, &usage, Options{
		Getenv:   func(string) string { return "" },
		Settings: []string{"DATABASE_URL", "DB_DRIVER", "LOG_LEVEL"},
	})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"--database-url", "--log-level", "DB_DRIVER"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, usage.String())
		}
	}
	for _, unwanted := range []string{"--listen-addr", "--log-format", "MANAGEMENT_TOKEN", "DRAIN_DELAY", "DATABASE_POOL_SIZE"} {
		if strings.Contains(usage.String(), unwanted) {
			t.Errorf("usage lists %q:\n%s", unwanted, usage.String())
		}
	}
	_, _, err = LoadWith("migrate", []string{"--listen-addr", ":1"}, io.Discard, Options{
		Getenv: func(string) string { return "" }, Settings: []string{"DATABASE_URL"},
	})
	if err == nil || !strings.Contains(err.Error(), "flag provided but not defined: -listen-addr") {
		t.Fatalf("unlisted flag: %v", err)
	}
}

func TestGetenvIsTheOnlyEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("LISTEN_ADDR", ":1")
	env := map[string]string{"LISTEN_ADDR": ":2", "PORT": "3"}
	dir := t.TempDir()
	file := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(file, []byte("management_token: t${PORT}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := LoadWith("proxy", []string{"--config", file}, io.Discard, Options{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != ":2" || c.ManagementToken != "t3" {
		t.Fatalf("listen %q, token %q: want :2 and t3 from Getenv", c.ListenAddr, c.ManagementToken)
	}
}

func TestExtraFlags(t *testing.T) {
	clearEnv(t)
	var timeout time.Duration
	_, rest, err := LoadWith("migrate", []string{"wait", "--timeout", "90s", "--database-pool-size", "7"}, &bytes.Buffer{}, Options{
		Flags: func(fs *flag.FlagSet) { fs.DurationVar(&timeout, "timeout", time.Minute, "how long to wait") },
	})
	if err != nil {
		t.Fatal(err)
	}
	if timeout != 90*time.Second || !cmp.Equal(rest, []string{"wait"}) {
		t.Errorf("timeout %v rest %q, want 1m30s [wait]", timeout, rest)
	}
}

func TestRequireEncryptionKey(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{name: "sqlite without key", env: map[string]string{}},
		{name: "postgres without key", env: map[string]string{"DATABASE_URL": "postgres://h/db"}, wantErr: true},
		{name: "postgres with key", env: map[string]string{"DATABASE_URL": "postgres://h/db", "ENCRYPTION_KEY": testKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tt.env)
			_, _, err := LoadWith("proxy", nil, &bytes.Buffer{}, Options{RequireEncryptionKey: true})
			if tt.wantErr {
				if got := problems(t, err); len(got) != 1 || !strings.HasPrefix(got[0], "ENCRYPTION_KEY: ") {
					t.Errorf("problems = %q, want one naming ENCRYPTION_KEY", got)
				}
			} else if err != nil {
				t.Errorf("unexpected error: %v", err)
			}
			if _, _, err := Load("migrate", nil, &bytes.Buffer{}); err != nil {
				t.Errorf("Load without the option must not require the key: %v", err)
			}
		})
	}
}

func TestEncryptionKeyEncodings(t *testing.T) {
	urlSafe := bytes.Repeat([]byte{0xfb, 0xff}, 16)
	for _, key := range []string{testKey, strings.TrimRight(testKey, "="), base64.URLEncoding.EncodeToString(urlSafe), base64.RawURLEncoding.EncodeToString(urlSafe)} {
		clearEnv(t)
		t.Setenv("ENCRYPTION_KEY", key)
		c, _ := mustLoad(t)
		if len(c.EncryptionKey) != 32 {
			t.Errorf("key %q decoded to %d bytes, want 32", key, len(c.EncryptionKey))
		}
	}
}
