// Package config builds the one Config value both binaries run with, from
// command-line flags > environment (Options.Getenv) > YAML file (--config /
// CONFIG_FILE, with ${VAR} and ${VAR:-default} expansion) > defaults.
//
// Every setting is validated in one pass; each problem names the env var,
// flag or YAML key to fix. Secrets (passwords in URLs, keys, tokens) never
// appear in problems or in the --help text. Only cmd/* import this package.
//
// One table (the settings struct's tags) names each setting's env var,
// flag, YAML key, default and meaning; the three sources are read into it
// as text, merged by precedence, and decoded into typed fields once, by
// build. The project once used envconfig for the environment, but it
// decodes one source into types by itself: it stops at the first bad
// value (here every problem is reported in one pass), cannot say whether a
// value came from a flag, the environment or the file (here each problem
// names the one to fix), and does not produce the flags, the --help text or
// the README table the settings table does. Reading the environment is a
// loop over the same table.
package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is the complete, validated configuration of a binary.
type Config struct {
	Database Database

	ListenAddr          string         // LISTEN_ADDR, default ":8080"
	ManagementToken     string         // MANAGEMENT_TOKEN; "" disables /manage
	EncryptionKey       []byte         // ENCRYPTION_KEY decoded (32 bytes); nil when unset
	RedisURL            string         // REDIS_URL (redis:// or rediss://); "" = in-process limiter and cache
	RedisFailOpen       bool           // REDIS_FAIL_OPEN, default false
	RedisKeyPrefix      string         // REDIS_KEY_PREFIX, default "llmproxy:"
	RedisPoolSize       int            // REDIS_POOL_SIZE, 0 = go-redis default
	RedisTimeout        time.Duration  // REDIS_TIMEOUT, default 50ms: per call on the request path
	RedisDialTimeout    time.Duration  // REDIS_DIAL_TIMEOUT, default 1s
	UpstreamTimeout     time.Duration  // UPSTREAM_TIMEOUT, default 10m: max wait for upstream response headers
	MaxRequestBytes     int64          // MAX_REQUEST_BYTES, default 10 MiB
	ShutdownGrace       time.Duration  // SHUTDOWN_GRACE, default 30s
	DrainDelay          time.Duration  // DRAIN_DELAY, default 5s
	AuthCacheTTL        time.Duration  // AUTH_CACHE_TTL, default 5s
	RequestBodyTimeout  time.Duration  // REQUEST_BODY_TIMEOUT, default 60s: whole request must arrive within it
	UpstreamIdleTimeout time.Duration  // UPSTREAM_IDLE_TIMEOUT, default 5m: longest upstream silence after headers
	AuthFailureLimit    int            // AUTH_FAILURE_LIMIT, default 20 per client IP per minute
	TrustedProxies      []netip.Prefix // TRUSTED_PROXIES; nil: the peer address is the client
	MetricsToken        string         // METRICS_TOKEN; "" leaves /metrics open without project names
	Console             Console
	CacheMaxBytes       int64         // CACHE_MAX_BYTES, default 64 MiB; 0 = no in-process response cache
	CacheMaxEntryBytes  int64         // CACHE_MAX_ENTRY_BYTES, default 1 MiB
	UsageBatchSize      int           // USAGE_BATCH_SIZE, 1..10000, default 500
	UsageFlushInterval  time.Duration // USAGE_FLUSH_INTERVAL, default 1s
	UsageBufferSize     int           // USAGE_BUFFER_SIZE, >= UsageBatchSize, default 100000
	Retention           Retention
	SSO                 SSO
	PublicURL           string // PUBLIC_URL without a trailing slash; "" = from each request
	Memory              Memory
	LogLevel            string // LOG_LEVEL: debug|info|warn|error, default info
	LogFormat           string // LOG_FORMAT: json|text, default json
	ConfigFile          string // --config / CONFIG_FILE; "" when none
}

// Console configures the admin console (SPEC §6.8).
type Console struct {
	Enabled     bool          // CONSOLE_ENABLED, default false
	SessionIdle time.Duration // CONSOLE_SESSION_IDLE, default 30m
	SessionMax  time.Duration // CONSOLE_SESSION_MAX, default 12h
	// Admins may sign in by SSO (CONSOLE_ADMINS): lower-case emails or
	// "@domain"; nil offers only the management token.
	Admins []string
}

// Retention says how long rows are kept; 0 keeps them forever.
type Retention struct {
	Usage    time.Duration // USAGE_RETENTION_DAYS, default 90 days
	Audit    time.Duration // AUDIT_RETENTION_DAYS, default 365 days
	Tokens   time.Duration // RETENTION_TOKENS: after expiry, default 30 days
	Interval time.Duration // RETENTION_INTERVAL, default 1h
}

// SSO is the device login's configuration (SPEC §6.5); Issuer "" is off.
type SSO struct {
	Issuer         string        // SSO_ISSUER
	ClientID       string        // SSO_CLIENT_ID
	ClientSecret   string        // SSO_CLIENT_SECRET; never printed
	RedirectURL    string        // SSO_REDIRECT_URL (default PUBLIC_URL/auth/callback)
	AllowedDomains []string      // SSO_ALLOWED_DOMAINS, lower case; nil: any verified email
	Project        string        // SSO_PROJECT: project name or id
	TokenTTL       time.Duration // SSO_TOKEN_TTL, default 720h
	StartLimit     int           // SSO_START_LIMIT: starts per client IP per minute, default 20; 0: no limit
}

// Memory configures cross-session memory (SPEC §6.6).
type Memory struct {
	Enabled       bool          // MEMORY_ENABLED, default false
	IdleTimeout   time.Duration // MEMORY_IDLE_TIMEOUT, default 30m
	SummaryModel  string        // MEMORY_SUMMARY_MODEL; "" = the session's model
	MaxInject     int           // MEMORY_MAX_INJECT, default 3
	MinScore      float64       // MEMORY_MIN_SCORE, default 0.3
	MaxBytes      int           // MEMORY_MAX_BYTES, default 64 KiB
	Redact        []string      // MEMORY_REDACT patterns, compiled once here to check them
	RedactDefault bool          // MEMORY_REDACT unset or holding the line "default": the built-in patterns too
	RetentionDays int           // MEMORY_RETENTION_DAYS, default 90; 0 keeps
}

// Error lists every configuration problem found. Each problem names the env
// var, flag or YAML key to fix and never contains a secret.
type Error struct {
	Problems []string
}

// Error returns the problems, one per line.
func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// Options adjusts LoadWith.
type Options struct {
	// Flags registers extra command-line flags (for example a migrate verb's
	// --timeout) on the same flag set, so they may be mixed with the
	// configuration flags and appear in --help.
	Flags func(fs *flag.FlagSet)
	// RequireEncryptionKey makes ENCRYPTION_KEY mandatory when the database
	// is PostgreSQL (the proxy needs it; the migrate tool does not).
	RequireEncryptionKey bool
	// Getenv reads the environment, including the ${VAR} references of the
	// YAML file; an unset variable reads as "". nil reads the process
	// environment (os.Getenv); binaries pass theirs from main.
	Getenv func(string) string
	// Settings lists, by environment variable name, the settings the binary
	// uses: only those get a flag and appear in --help. nil means all.
	Settings []string
}

// Load builds the Config from defaults < YAML file < environment < flags,
// validating everything in one pass. args are the command-line arguments
// without the program name; flags and positional arguments may be mixed
// (everything after "--" is positional). Load returns the positional
// arguments in order.
//
// On validation problems it returns a *Error listing all of them. On -h or
// --help it writes the usage text to usage and returns flag.ErrHelp.
func Load(name string, args []string, usage io.Writer) (*Config, []string, error) {
	return LoadWith(name, args, usage, Options{})
}

// LoadWith is Load with options.
func LoadWith(name string, args []string, usage io.Writer, opts Options) (*Config, []string, error) {
	table := fields()
	p := &parser{}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}

	var flagged settings
	fs, positional, err := parseFlags(name, args, shown(table, opts.Settings), &flagged, opts.Flags, p)
	if errors.Is(err, flag.ErrHelp) {
		writeUsage(usage, fs, shown(table, opts.Settings))
		return nil, nil, flag.ErrHelp
	}

	var env settings
	for _, f := range table {
		env.at(f).text = getenv(f.env)
	}

	var file settings
	path := env.ConfigFile.text
	if flagged.ConfigFile.set {
		path = flagged.ConfigFile.text
	}
	if path != "" {
		src := "CONFIG_FILE"
		if flagged.ConfigFile.set {
			src = "--config"
		}
		readFile(path, src, table, &file, getenv, p)
	}

	var s settings
	for _, f := range table {
		v := s.at(f)
		switch fv, ev, yv := flagged.at(f), env.at(f), file.at(f); {
		case fv.set:
			*v = *fv
		case ev.text != "":
			*v = value{text: ev.text, from: f.env, set: true}
		case yv.set:
			*v = *yv
		default:
			*v = value{text: f.def, from: f.env}
		}
		v.secret = f.secret
	}

	c := build(&s, p, opts)
	if len(p.problems) > 0 {
		return nil, nil, &Error{Problems: p.problems}
	}
	return c, positional, nil
}

// shown returns the fields named in only, all of them when only is nil.
func shown(table []field, only []string) []field {
	if only == nil {
		return table
	}
	var out []field
	for _, f := range table {
		if slices.Contains(only, f.env) {
			out = append(out, f)
		}
	}
	return out
}

// build parses and checks every merged setting.
func build(s *settings, p *parser, opts Options) *Config {
	c := &Config{
		Database:         buildDatabase(s, p),
		ListenAddr:       s.ListenAddr.text,
		ManagementToken:  s.ManagementToken.text,
		RedisFailOpen:    p.boolean(s.RedisFailOpen),
		RedisKeyPrefix:   s.RedisKeyPrefix.text,
		RedisPoolSize:    p.integer(s.RedisPoolSize, 0, 10000),
		RedisTimeout:     p.duration(s.RedisTimeout),
		RedisDialTimeout: p.duration(s.RedisDialTimeout),
		Retention: Retention{
			Usage:    time.Duration(p.integer(s.UsageRetentionDays, 0, 36500)) * 24 * time.Hour,
			Audit:    time.Duration(p.integer(s.AuditRetentionDays, 0, 36500)) * 24 * time.Hour,
			Tokens:   p.durationOrZero(s.RetentionTokens),
			Interval: p.duration(s.RetentionInterval),
		},
		Memory: Memory{
			Enabled:       p.boolean(s.MemoryEnabled),
			IdleTimeout:   p.duration(s.MemoryIdleTimeout),
			SummaryModel:  strings.TrimSpace(s.MemorySummaryModel.text),
			MaxInject:     p.integer(s.MemoryMaxInject, 0, 20),
			MinScore:      p.float(s.MemoryMinScore, 0, 10),
			MaxBytes:      p.integer(s.MemoryMaxBytes, 1024, 16<<20),
			RetentionDays: p.integer(s.MemoryRetentionDays, 0, 36500),
		},
		UpstreamTimeout:     p.duration(s.UpstreamTimeout),
		MaxRequestBytes:     int64(p.integer(s.MaxRequestBytes, 1, 1<<40)),
		ShutdownGrace:       p.duration(s.ShutdownGrace),
		DrainDelay:          p.durationOrZero(s.DrainDelay),
		AuthCacheTTL:        p.duration(s.AuthCacheTTL),
		RequestBodyTimeout:  p.duration(s.RequestBodyTimeout),
		UpstreamIdleTimeout: p.duration(s.UpstreamIdleTimeout),
		AuthFailureLimit:    p.integer(s.AuthFailureLimit, 1, 100000),
		TrustedProxies:      p.prefixes(s.TrustedProxies),
		MetricsToken:        s.MetricsToken.text,
		Console: Console{
			Enabled:     p.boolean(s.ConsoleEnabled),
			SessionIdle: p.duration(s.ConsoleSessionIdle),
			SessionMax:  p.duration(s.ConsoleSessionMax),
		},
		CacheMaxBytes:      int64(p.integer(s.CacheMaxBytes, 0, 1<<40)),
		CacheMaxEntryBytes: int64(p.integer(s.CacheMaxEntryBytes, 1, 1<<30)),
		UsageBatchSize:     p.integer(s.UsageBatchSize, 1, 10000),
		UsageFlushInterval: p.duration(s.UsageFlushInterval),
		UsageBufferSize:    p.integer(s.UsageBufferSize, 1, 100_000_000),
		LogLevel:           p.oneOf(s.LogLevel, "debug", "info", "warn", "error"),
		LogFormat:          p.oneOf(s.LogFormat, "json", "text"),
		ConfigFile:         s.ConfigFile.text,
	}
	if _, port, err := net.SplitHostPort(c.ListenAddr); err != nil || port == "" {
		p.add(s.ListenAddr, "must be host:port or :port, such as :8080")
	}
	if s.EncryptionKey.text != "" {
		c.EncryptionKey = decodeKey(s.EncryptionKey.text)
		if c.EncryptionKey == nil {
			p.add(s.EncryptionKey, "must be base64 of exactly 32 bytes (generate one with: openssl rand -base64 32)")
		}
	}
	if opts.RequireEncryptionKey && c.Database.Driver == "postgres" && s.EncryptionKey.text == "" {
		p.problems = append(p.problems, "ENCRYPTION_KEY: required when the database is PostgreSQL (generate one with: openssl rand -base64 32)")
	}
	if s.RedisURL.text != "" {
		if msg := checkRedisURL(s.RedisURL.text); msg != "" {
			p.add(s.RedisURL, msg)
		} else {
			c.RedisURL = s.RedisURL.text
		}
	}
	if c.Console.Enabled && c.ManagementToken == "" {
		p.problems = append(p.problems, "CONSOLE_ENABLED: the console signs in with the management token; set MANAGEMENT_TOKEN too")
	}
	if c.Console.SessionMax > 0 && c.Console.SessionIdle > c.Console.SessionMax {
		p.add(s.ConsoleSessionIdle, fmt.Sprintf("must not exceed CONSOLE_SESSION_MAX (%s)", c.Console.SessionMax))
	}
	c.PublicURL, c.SSO = buildSSO(s, p)
	c.Console.Admins = consoleAdmins(s, p, c.SSO)
	c.Memory.Redact, c.Memory.RedactDefault = p.patterns(s.MemoryRedact)
	if c.UsageBatchSize > 0 && c.UsageBufferSize > 0 && c.UsageBufferSize < c.UsageBatchSize {
		p.add(s.UsageBufferSize, fmt.Sprintf("must be at least the usage batch size (%d)", c.UsageBatchSize))
	}
	return c
}

// buildSSO checks PUBLIC_URL and the SSO settings: with SSO_ISSUER set,
// the client ID, the project and a redirect URL (given, or derived from
// PUBLIC_URL) are required.
func buildSSO(s *settings, p *parser) (string, SSO) {
	public := strings.TrimRight(strings.TrimSpace(s.PublicURL.text), "/")
	if public != "" && !httpURL(public, false) {
		p.add(s.PublicURL, "must be an http:// or https:// URL without query or fragment, such as https://llm.example.com")
	}
	c := SSO{
		Issuer:       strings.TrimSpace(s.SSOIssuer.text),
		ClientID:     strings.TrimSpace(s.SSOClientID.text),
		ClientSecret: s.SSOClientSecret.text,
		RedirectURL:  strings.TrimSpace(s.SSORedirectURL.text),
		Project:      strings.TrimSpace(s.SSOProject.text),
		TokenTTL:     p.duration(s.SSOTokenTTL),
		StartLimit:   p.integer(s.SSOStartLimit, 0, 100000),
	}
	for _, d := range strings.Split(s.SSOAllowedDomains.text, ",") {
		if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
			c.AllowedDomains = append(c.AllowedDomains, d)
		}
	}
	if c.Issuer == "" {
		return public, c
	}
	if !httpURL(c.Issuer, true) {
		p.add(s.SSOIssuer, "must be the provider's https:// issuer URL (http:// only for localhost)")
	}
	if c.ClientID == "" {
		p.add(s.SSOClientID, "required when SSO_ISSUER is set")
	}
	if c.Project == "" {
		p.add(s.SSOProject, "required when SSO_ISSUER is set: the project (name or id) whose upstream serves agent tokens")
	}
	if c.RedirectURL == "" && public != "" {
		c.RedirectURL = public + "/auth/callback"
	}
	switch {
	case c.RedirectURL == "":
		p.add(s.SSORedirectURL, "required when SSO_ISSUER is set and PUBLIC_URL is not (the proxy's /auth/callback URL)")
	case !httpURL(c.RedirectURL, false) || !strings.HasSuffix(c.RedirectURL, "/auth/callback"):
		p.add(s.SSORedirectURL, "must be an http(s) URL ending in /auth/callback")
	}
	return public, c
}

// consoleAdmins checks CONSOLE_ADMINS: emails or "@domain" entries, in
// lower case, each within SSO_ALLOWED_DOMAINS (a person outside them could
// never sign in), and SSO configured to sign them in.
func consoleAdmins(s *settings, p *parser, sso SSO) []string {
	var admins []string
	for _, a := range strings.Split(s.ConsoleAdmins.text, ",") {
		if a = strings.ToLower(strings.TrimSpace(a)); a == "" {
			continue
		}
		at := strings.IndexByte(a, '@')
		if at < 0 || at == len(a)-1 || strings.Count(a, "@") != 1 || strings.ContainsAny(a, " \t<>\"(),;:") {
			p.add(s.ConsoleAdmins, fmt.Sprintf("%q is neither an email address nor @domain", a))
			continue
		}
		if len(sso.AllowedDomains) > 0 && !slices.Contains(sso.AllowedDomains, a[at+1:]) {
			p.add(s.ConsoleAdmins, fmt.Sprintf("%s is outside SSO_ALLOWED_DOMAINS, so it could never sign in", a))
		}
		admins = append(admins, a)
	}
	if len(admins) > 0 && sso.Issuer == "" {
		p.add(s.ConsoleAdmins, "people sign in to the console by SSO: set SSO_ISSUER (and the other SSO_ settings) too")
	}
	return admins
}

// httpURL reports whether u is an absolute http or https URL without
// query, fragment or credentials; strict allows http only for loopback
// hosts.
func httpURL(u string, strict bool) bool {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Host == "" || parsed.RawQuery != "" || parsed.Fragment != "" || parsed.User != nil {
		return false
	}
	switch parsed.Scheme {
	case "https":
		return true
	case "http":
		if !strict {
			return true
		}
		host := parsed.Hostname()
		ip := net.ParseIP(host)
		return host == "localhost" || ip != nil && ip.IsLoopback()
	}
	return false
}

// decodeKey returns the 32-byte key encoded in standard or URL-safe base64
// (padded or not), or nil.
func decodeKey(text string) []byte {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(strings.TrimSpace(text)); err == nil && len(b) == 32 {
			return b
		}
	}
	return nil
}

// parser converts setting text to typed values, collecting problems instead
// of stopping at the first one.
type parser struct {
	problems []string
}

// add records a problem with v, naming its source and quoting the offending
// text unless it is a secret (URLs are quoted with their password masked).
func (p *parser) add(v value, msg string) {
	switch v.secret {
	case "":
		msg += fmt.Sprintf(" (got %q)", v.text)
	case "url":
		msg += " (got " + MaskURL(v.text) + ")"
	}
	p.problems = append(p.problems, v.from+": "+msg)
}

func (p *parser) integer(v value, lo, hi int) int {
	n, err := strconv.Atoi(strings.TrimSpace(v.text))
	if err != nil || n < lo || n > hi {
		p.add(v, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
		return 0
	}
	return n
}

func (p *parser) float(v value, lo, hi float64) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(v.text), 64)
	if err != nil || math.IsNaN(f) || f < lo || f > hi {
		p.add(v, fmt.Sprintf("must be a number from %g to %g", lo, hi))
		return 0
	}
	return f
}

// patterns parses regular expressions, one per line; the line "default"
// (or no line at all) asks for the built-in ones too.
func (p *parser) patterns(v value) (res []string, withDefault bool) {
	withDefault = strings.TrimSpace(v.text) == ""
	for line := range strings.SplitSeq(v.text, "\n") {
		line = strings.TrimSpace(line)
		switch line {
		case "":
			continue
		case "default":
			withDefault = true
			continue
		}
		if _, err := regexp.Compile(line); err != nil {
			p.add(v, fmt.Sprintf("pattern %q is not a valid regular expression: %v", line, err))
			continue
		}
		res = append(res, line)
	}
	return res, withDefault
}

func (p *parser) boolean(v value) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v.text))
	if err != nil {
		p.add(v, "must be true or false")
	}
	return b
}

// duration parses a positive Go duration.
func (p *parser) duration(v value) time.Duration {
	d, err := time.ParseDuration(strings.TrimSpace(v.text))
	if err != nil || d <= 0 {
		p.add(v, "must be a positive Go duration such as 500ms, 30s or 5m")
		return 0
	}
	return d
}

// durationOrZero parses a non-negative Go duration.
func (p *parser) durationOrZero(v value) time.Duration {
	d, err := time.ParseDuration(strings.TrimSpace(v.text))
	if err != nil || d < 0 {
		p.add(v, "must be a Go duration of 0 or more, such as 0s or 5s")
		return 0
	}
	return d
}

// seconds parses a positive number of seconds ("30") or Go duration ("30s").
func (p *parser) seconds(v value) time.Duration {
	text := strings.TrimSpace(v.text)
	if n, err := strconv.ParseFloat(text, 64); err == nil {
		d := time.Duration(n * float64(time.Second))
		if d > 0 {
			return d
		}
	} else if d, err := time.ParseDuration(text); err == nil && d > 0 {
		return d
	}
	p.add(v, "must be a positive number of seconds (30) or Go duration (30s)")
	return 0
}

// prefixes parses a comma list of CIDRs (a bare address is a /32 or /128).
func (p *parser) prefixes(v value) []netip.Prefix {
	var out []netip.Prefix
	for _, part := range strings.Split(v.text, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(part)
		if err != nil {
			addr, aerr := netip.ParseAddr(part)
			if aerr != nil {
				p.add(v, "must be a comma list of CIDRs such as 10.0.0.0/8, 192.168.1.10")
				return nil
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, pfx.Masked())
	}
	return out
}

func (p *parser) oneOf(v value, choices ...string) string {
	text := strings.ToLower(strings.TrimSpace(v.text))
	for _, c := range choices {
		if text == c {
			return text
		}
	}
	p.add(v, "must be one of "+strings.Join(choices, ", "))
	return ""
}
