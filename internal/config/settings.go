package config

import (
	"fmt"
	"reflect"
	"strings"
)

// value is one setting's raw text and where it came from. from names the
// source to fix ("DATABASE_URL", "--database-url", "database.url in app.yaml";
// the env name for a default); set reports that a source gave the text.
type value struct {
	text   string
	from   string
	set    bool
	secret string // "" shown, "url" shown masked, "true" never shown
}

// settings is the single source of truth for every setting: its env name
// (env tag), flag, YAML key, default, help text and whether it is a
// secret. Load, the --help text and MarkdownTable are all derived from it.
//
// Tags: env = env var; flag = command-line flag without dashes;
// key = dotted YAML path; def = default value; show = default as documented
// when it is not a literal; doc = meaning; secret = never printed; bool = flag
// takes no argument.
type settings struct {
	ConfigFile value `env:"CONFIG_FILE" flag:"config" doc:"YAML configuration file; values may use ${VAR} and ${VAR:-default}"`

	DatabaseURL             value `env:"DATABASE_URL" flag:"database-url" key:"database.url" def:"sqlite:///./var/db/proxy.db" secret:"url" doc:"where the data lives: sqlite:///./rel.db, sqlite:////abs.db, sqlite:///:memory:, postgres://user:pass@host:5432/db?sslmode=require"`
	DBDriver                value `env:"DB_DRIVER" doc:"sqlite or postgres; used only when DATABASE_URL is unset (then DATABASE_PATH for SQLite)"`
	DatabasePath            value `env:"DATABASE_PATH" def:"./var/db/proxy.db" doc:"SQLite file used when DATABASE_URL is unset"`
	DatabasePoolSize        value `env:"DATABASE_POOL_SIZE" flag:"database-pool-size" key:"database.pool_size" def:"5" doc:"persistent connections (1-100); ignored for SQLite"`
	DatabaseMaxOverflow     value `env:"DATABASE_MAX_OVERFLOW" flag:"database-max-overflow" key:"database.max_overflow" def:"10" doc:"extra connections under load (0-100); max connections = pool_size + max_overflow"`
	DatabasePoolTimeout     value `env:"DATABASE_POOL_TIMEOUT" flag:"database-pool-timeout" key:"database.pool_timeout" def:"30s" doc:"how long a request waits for a connection before failing with \"pool exhausted\" (seconds or Go duration)"`
	DatabaseMaxIdleConns    value `env:"DATABASE_MAX_IDLE_CONNS" key:"database.max_idle_conns" show:"= pool_size" doc:"connections kept open while idle (0 to pool_size + max_overflow): pgxpool MinConns, opened at start-up; the rest close after a minute unused"`
	DatabaseConnMaxLifetime value `env:"DATABASE_CONN_MAX_LIFETIME" key:"database.conn_max_lifetime" def:"1h" doc:"recycle connections after this long (Go duration)"`
	DatabaseEcho            value `env:"DATABASE_ECHO" flag:"database-echo" key:"database.echo" def:"false" bool:"true" doc:"log every SQL statement with its duration, without argument values"`
	DatabaseEchoPool        value `env:"DATABASE_ECHO_POOL" flag:"database-echo-pool" key:"database.echo_pool" def:"false" bool:"true" doc:"log pool events (acquire, release, new, close); ignored for SQLite"`
	DatabaseAutoMigrate     value `env:"DATABASE_AUTO_MIGRATE" flag:"database-auto-migrate" key:"database.auto_migrate" def:"true" bool:"true" doc:"apply pending migrations at start-up"`

	ListenAddr       value `env:"LISTEN_ADDR" flag:"listen-addr" key:"listen_addr" def:":8080" doc:"address the HTTP server listens on"`
	ManagementToken  value `env:"MANAGEMENT_TOKEN" flag:"management-token" key:"management_token" secret:"true" doc:"bearer token for /manage; unset disables /manage"`
	EncryptionKey    value `env:"ENCRYPTION_KEY" key:"encryption_key" secret:"true" doc:"base64 of 32 random bytes; encrypts upstream API keys (AES-256-GCM)"`
	RedisURL         value `env:"REDIS_URL" flag:"redis-url" key:"redis.url" secret:"url" doc:"redis:// or rediss:// URL; unset keeps limits and caches in process (single instance only)"`
	RedisFailOpen    value `env:"REDIS_FAIL_OPEN" key:"redis.fail_open" def:"false" doc:"when Redis is unreachable, allow (true) or reject (false) rate-limited requests"`
	RedisKeyPrefix   value `env:"REDIS_KEY_PREFIX" key:"redis.key_prefix" def:"llmproxy:" doc:"prefix of every Redis key and channel, so deployments can share one Redis"`
	RedisPoolSize    value `env:"REDIS_POOL_SIZE" key:"redis.pool_size" def:"0" show:"10 per CPU" doc:"Redis connections per replica (0-10000; 0 = go-redis default)"`
	RedisTimeout     value `env:"REDIS_TIMEOUT" key:"redis.timeout" def:"50ms" doc:"deadline of each Redis call on the request path; past it REDIS_FAIL_OPEN decides (Go duration)"`
	RedisDialTimeout value `env:"REDIS_DIAL_TIMEOUT" key:"redis.dial_timeout" def:"1s" doc:"deadline for opening a Redis connection (Go duration)"`
	UpstreamTimeout  value `env:"UPSTREAM_TIMEOUT" flag:"upstream-timeout" key:"upstream_timeout" def:"10m" doc:"maximum wait for upstream response headers (Go duration)"`
	MaxRequestBytes  value `env:"MAX_REQUEST_BYTES" flag:"max-request-bytes" key:"max_request_bytes" def:"10485760" doc:"largest accepted request body in bytes"`
	ShutdownGrace    value `env:"SHUTDOWN_GRACE" flag:"shutdown-grace" key:"shutdown_grace" def:"30s" doc:"how long in-flight requests may finish after draining (Go duration)"`
	DrainDelay       value `env:"DRAIN_DELAY" flag:"drain-delay" key:"drain_delay" def:"5s" doc:"how long /readyz reports not ready before the listener closes (Go duration)"`
	AuthCacheTTL     value `env:"AUTH_CACHE_TTL" key:"auth_cache_ttl" def:"5s" doc:"how long a token lookup is cached in process (Go duration)"`

	RequestBodyTimeout  value `env:"REQUEST_BODY_TIMEOUT" key:"request_body_timeout" def:"60s" doc:"the whole request (headers and body) must arrive within this; 408 otherwise (Go duration)"`
	UpstreamIdleTimeout value `env:"UPSTREAM_IDLE_TIMEOUT" key:"upstream_idle_timeout" def:"5m" doc:"longest silence between bytes of an upstream answer once its headers came; the exchange is then cut (Go duration)"`
	AuthFailureLimit    value `env:"AUTH_FAILURE_LIMIT" key:"auth_failure_limit" def:"20" doc:"failed authentications per client IP per minute before 429 (1-100000)"`
	TrustedProxies      value `env:"TRUSTED_PROXIES" key:"trusted_proxies" doc:"comma list of CIDRs whose X-Forwarded-For names the client; empty: the peer address is the client"`
	MetricsToken        value `env:"METRICS_TOKEN" key:"metrics_token" secret:"true" doc:"bearer token required by /metrics; when set, /metrics also serves llm_project_info (project names)"`

	ConsoleEnabled     value `env:"CONSOLE_ENABLED" key:"console.enabled" def:"false" doc:"serve the admin console under /console (needs MANAGEMENT_TOKEN to sign in); false answers 404 there"`
	ConsoleSessionIdle value `env:"CONSOLE_SESSION_IDLE" key:"console.session_idle" def:"30m" doc:"a console session ends after this long without a request (Go duration)"`
	ConsoleSessionMax  value `env:"CONSOLE_SESSION_MAX" key:"console.session_max" def:"12h" doc:"a console session ends this long after sign-in, however active (Go duration)"`
	ConsoleAdmins      value `env:"CONSOLE_ADMINS" key:"console.admins" doc:"comma list of emails, or @domain for a whole domain (any case), who may sign in to the console by SSO; needs SSO_ISSUER, and each must be within SSO_ALLOWED_DOMAINS; removing someone ends their console sessions at their next request"`

	CacheMaxBytes      value `env:"CACHE_MAX_BYTES" key:"cache.max_bytes" def:"67108864" doc:"byte budget of the in-process response cache, least recently used entries evicted (0-1099511627776; 0 turns the cache off); unused with REDIS_URL, where entries live in Redis"`
	CacheMaxEntryBytes value `env:"CACHE_MAX_ENTRY_BYTES" key:"cache.max_entry_bytes" def:"1048576" doc:"largest answer body the response cache stores (1-1073741824)"`

	UsageBatchSize     value `env:"USAGE_BATCH_SIZE" key:"usage.batch_size" def:"500" doc:"usage rows written per batch (1-10000)"`
	UsageFlushInterval value `env:"USAGE_FLUSH_INTERVAL" key:"usage.flush_interval" def:"1s" doc:"longest wait before a partial usage batch is written (Go duration)"`
	UsageBufferSize    value `env:"USAGE_BUFFER_SIZE" key:"usage.buffer_size" def:"100000" doc:"usage rows held in memory while the database is unreachable (at least the batch size)"`

	UsageRetentionDays value `env:"USAGE_RETENTION_DAYS" key:"retention.usage_days" def:"90" doc:"keep usage rows (and their roll-up) this many whole UTC days (0-36500; 0 keeps them); PostgreSQL drops whole daily partitions, SQLite deletes in batches"`
	AuditRetentionDays value `env:"AUDIT_RETENTION_DAYS" key:"retention.audit_days" def:"365" doc:"keep audit events this many whole UTC days (0-36500; 0 keeps them); PostgreSQL drops whole daily partitions, SQLite deletes in batches"`
	RetentionTokens    value `env:"RETENTION_TOKENS" key:"retention.tokens" def:"720h" doc:"delete tokens this long after they expired (Go duration; 0 keeps them)"`
	RetentionInterval  value `env:"RETENTION_INTERVAL" key:"retention.interval" def:"1h" doc:"how often one replica runs the retention sweep (Go duration)"`

	SSOIssuer           value `env:"SSO_ISSUER" key:"sso.issuer" doc:"OIDC issuer URL for device login (discovery at ISSUER/.well-known/openid-configuration); empty turns SSO off and /auth/* answers 404"`
	SSOClientID         value `env:"SSO_CLIENT_ID" key:"sso.client_id" doc:"OAuth client ID registered at the provider; required with SSO_ISSUER"`
	SSOClientSecret     value `env:"SSO_CLIENT_SECRET" key:"sso.client_secret" secret:"true" doc:"OAuth client secret (empty for a public client, which PKCE protects)"`
	SSORedirectURL      value `env:"SSO_REDIRECT_URL" key:"sso.redirect_url" doc:"the callback URL registered at the provider; must end in /auth/callback (default PUBLIC_URL/auth/callback)"`
	SSOAllowedDomains   value `env:"SSO_ALLOWED_DOMAINS" key:"sso.allowed_domains" doc:"comma list of email domains allowed to sign in; empty: any verified email"`
	SSOProject          value `env:"SSO_PROJECT" key:"sso.project" doc:"project (name or id) whose upstream serves agent tokens; resolved when used, device endpoints answer 503 until it exists; required with SSO_ISSUER"`
	SSOTokenTTL         value `env:"SSO_TOKEN_TTL" key:"sso.token_ttl" def:"720h" doc:"lifetime of an agent token (Go duration)"`
	SSOStartLimit       value `env:"SSO_START_LIMIT" key:"sso.start_limit" def:"20" doc:"device-login starts (device codes and browser sign-ins together) per client IP per minute before 429, counted in Redis when configured (0-100000; 0 = no limit)"`
	PublicURL           value `env:"PUBLIC_URL" key:"public_url" doc:"the proxy's external URL (https://llm.example.com), for the device verification URI and Secure cookies; empty: taken from each request"`
	MemoryEnabled       value `env:"MEMORY_ENABLED" key:"memory.enabled" def:"false" doc:"cross-session memory for requests with X-Session-ID: capture, summarise, inject (SPEC §6.6)"`
	MemoryIdleTimeout   value `env:"MEMORY_IDLE_TIMEOUT" key:"memory.idle_timeout" def:"30m" doc:"a session quiet this long is summarised (Go duration)"`
	MemorySummaryModel  value `env:"MEMORY_SUMMARY_MODEL" key:"memory.summary_model" show:"the session's model" doc:"model the summariser asks, through the session's own project upstream"`
	MemoryMaxInject     value `env:"MEMORY_MAX_INJECT" key:"memory.max_inject" def:"3" doc:"summaries injected at most into a session's first request (0-20; 0 captures and summarises without injecting)"`
	MemoryMinScore      value `env:"MEMORY_MIN_SCORE" key:"memory.min_score" def:"0.3" doc:"relevance a summary needs to be injected: recency (1 now, halving weekly) + 2 × keyword overlap with the prompt + 0.25 with open tasks (0-10)"`
	MemoryMaxBytes      value `env:"MEMORY_MAX_BYTES" key:"memory.max_bytes" def:"65536" doc:"largest stored transcript in bytes, oldest turns dropped first (1024-16777216)"`
	MemoryRedact        value `env:"MEMORY_REDACT" key:"memory.redact" show:"API keys, bearer tokens, private keys" doc:"regular expressions (Go syntax), one per line, whose matches are removed from transcripts before they are stored or summarised; the line default adds the built-in ones"`
	MemoryRetentionDays value `env:"MEMORY_RETENTION_DAYS" key:"memory.retention_days" def:"90" doc:"delete session summaries and transcripts older than this many days (0 keeps them)"`

	LogLevel  value `env:"LOG_LEVEL" flag:"log-level" key:"log.level" def:"info" doc:"debug, info, warn or error"`
	LogFormat value `env:"LOG_FORMAT" flag:"log-format" key:"log.format" def:"json" doc:"json or text"`
}

// field describes one settings field, read from its struct tags.
type field struct {
	index  int
	env    string
	flag   string
	key    string
	def    string
	show   string
	doc    string
	secret string
	bool   bool
}

// fields returns the settings table in declaration order.
func fields() []field {
	t := reflect.TypeFor[settings]()
	out := make([]field, t.NumField())
	for i := range out {
		tag := t.Field(i).Tag
		f := field{
			index:  i,
			env:    tag.Get("env"),
			flag:   tag.Get("flag"),
			key:    tag.Get("key"),
			def:    tag.Get("def"),
			show:   tag.Get("show"),
			doc:    tag.Get("doc"),
			secret: tag.Get("secret"),
			bool:   tag.Get("bool") == "true",
		}
		if f.show == "" {
			f.show = f.def
		}
		out[i] = f
	}
	return out
}

// at returns the settings field described by f.
func (s *settings) at(f field) *value {
	return reflect.ValueOf(s).Elem().Field(f.index).Addr().Interface().(*value)
}

// MarkdownTable renders every setting as a Markdown table (env | flag | yaml |
// default | meaning), generated from the same definitions Load uses.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| env | flag | yaml | default | meaning |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, f := range fields() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n",
			code(f.env), code(flagName(f.flag)), code(f.key), code(f.show), cell(f.doc))
	}
	return b.String()
}

func flagName(name string) string {
	if name == "" {
		return ""
	}
	return "--" + name
}

func code(s string) string {
	if s == "" {
		return "—"
	}
	return "`" + cell(s) + "`"
}

func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
