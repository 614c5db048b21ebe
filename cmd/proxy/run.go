package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpproxy"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/cli"
	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/console"
	"github.com/llmproxy/llm-proxy/internal/httpapi"
	"github.com/llmproxy/llm-proxy/internal/invalidate"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/policy"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/replica"
	"github.com/llmproxy/llm-proxy/internal/retention"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/sso"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
	"github.com/llmproxy/llm-proxy/internal/usage"
)

const serverUsage = `proxy is the LLM Proxy gateway: an OpenAI- and Anthropic-compatible
endpoint that authenticates tokens, applies limits and records usage.

Usage:
  proxy [flags]              serve the gateway until Ctrl-C or SIGTERM, then drain
  proxy project <command>    create and list projects on the configured database
  proxy token <command>      create, revoke and list tokens on the configured database
  proxy login --url URL      get an agent token through SSO device login (prints it)
  proxy help [command]       print this help, or a command's

`

// run is the whole program: it serves until ctx is cancelled (SIGTERM) and
// the shutdown sequence of SPEC §6.4 has finished, or returns a start-up
// error; or it runs one command. getenv is the program's environment; help
// goes to stdout, logs to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "help":
			return help(stdout, args[1:], getenv)
		case "project", "token":
			return runCLI(ctx, args, getenv, stdout, stderr)
		case "login":
			return runLogin(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	var flags bytes.Buffer
	cfg, rest, err := config.LoadWith("proxy", args, &flags, config.Options{RequireEncryptionKey: true, Getenv: getenv})
	if errors.Is(err, flag.ErrHelp) {
		_, err := io.WriteString(stdout, serverUsage+flags.String())
		return err
	}
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{Msg: fmt.Sprintf("unknown command %q (commands: %s; see: proxy help)", rest[0], commandList())}
	}
	logger, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, getenv, logger)
}

// commandList names the commands for usage errors.
func commandList() string { return strings.Join(append(slices.Clone(cli.Commands), "login"), ", ") }

// help writes the usage of the server (no topic) or of one command.
func help(w io.Writer, topic []string, getenv func(string) string) error {
	switch {
	case len(topic) == 0:
		var flags bytes.Buffer
		_, _, err := config.LoadWith("proxy", []string{"--help"}, &flags, config.Options{Getenv: getenv})
		if !errors.Is(err, flag.ErrHelp) {
			return err
		}
		_, err = io.WriteString(w, serverUsage+flags.String())
		return err
	case len(topic) == 1 && slices.Contains(cli.Commands, topic[0]):
		return cli.Usage(w, topic[0])
	case len(topic) == 1 && topic[0] == "login":
		_, err := io.WriteString(w, loginUsage)
		return err
	default:
		return usageError{Msg: fmt.Sprintf("help: unknown command %q (commands: %s)", strings.Join(topic, " "), commandList())}
	}
}

// runCLI runs a project or token command on the configured database.
func runCLI(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := cli.Run(ctx, args, cli.Options{Stdout: stdout, Stderr: stderr, Getenv: getenv,
		Open: func(ctx context.Context) (cli.Backend, error) {
			cfg, _, err := config.LoadWith("proxy", nil, io.Discard, config.Options{Getenv: getenv})
			if err != nil {
				return cli.Backend{}, err
			}
			logger, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return cli.Backend{}, err
			}
			st, err := openStore(ctx, cfg, logger, nil)
			if errors.Is(err, sqlite.ErrInUse) {
				return cli.Backend{}, fmt.Errorf("database %s is in use by a running proxy server: stop the server first, "+
					"or make this change through its management API (/manage with MANAGEMENT_TOKEN)", cfg.Database.Masked())
			}
			if err != nil {
				return cli.Backend{}, err
			}
			cipher, err := loadCipher(cfg, logger)
			if err != nil {
				st.Close()
				return cli.Backend{}, err
			}
			return cli.Backend{Store: st, Cipher: cipher, Logger: logger}, nil
		},
	})
	var ue cli.UsageError
	if errors.As(err, &ue) {
		return usageError{Msg: ue.Msg}
	}
	return err
}

// serve wires the components, serves until ctx ends, then drains.
func serve(ctx context.Context, cfg *config.Config, getenv func(string) string, logger *slog.Logger) error {
	logger.Info("starting", "database", cfg.Database.Masked(), "listen_addr", cfg.ListenAddr)
	tp, stopTracing, err := setupTracing(ctx, getenv, logger)
	if err != nil {
		return err
	}
	defer stopTracing()
	var pgTracer pgx.QueryTracer
	if tp != nil {
		pgTracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp))
	}
	st, err := openStore(ctx, cfg, logger, pgTracer)
	if err != nil {
		return err
	}
	defer st.Close()
	cipher, err := loadCipher(cfg, logger)
	if err != nil {
		return err
	}

	metrics := telemetry.NewMetrics()
	metrics.RegisterPool(cfg.Database.Driver, st.Stats)
	recorder := usage.New(st, usage.Options{
		BatchSize: cfg.UsageBatchSize, FlushInterval: cfg.UsageFlushInterval, BufferSize: cfg.UsageBufferSize, Logger: logger,
	})
	metrics.RegisterQueue(func() telemetry.QueueStats {
		s := recorder.Stats()
		return telemetry.QueueStats{QueuedUsage: s.QueuedUsage, QueuedAudit: s.QueuedAudit, DroppedUsage: s.DroppedUsage,
			DroppedAudit: s.DroppedAudit, WrittenUsage: s.WrittenUsage, WrittenAudit: s.WrittenAudit, FlushErrors: s.FlushErrors}
	})
	authOpts := auth.Options{TTL: cfg.AuthCacheTTL, NegativeTTL: cfg.AuthCacheTTL, Logger: logger}
	if cfg.SSO.Issuer != "" {
		authOpts.Agents, authOpts.AgentProject = st, cfg.SSO.Project
	}
	authn := auth.New(st, cipher, authOpts)
	origins := policy.NewOrigins(st, policy.OriginsOptions{TTL: cfg.AuthCacheTTL, Logger: logger})
	sh, err := newShared(ctx, cfg, st, invalidate.Targets{authn, origins}, metrics, recorder, tp, logger)
	if err != nil {
		return err
	}
	defer sh.close()
	failures := auth.NewFailureLimiter(st, recorder, auth.FailureOptions{
		Limit: cfg.AuthFailureLimit, Redis: sh.redis, KeyPrefix: cfg.RedisKeyPrefix + "authfail:",
		RedisTimeout: cfg.RedisTimeout, Breaker: sh.breaker, Logger: logger,
	})
	respCache := responseCache(cfg, sh, metrics, logger)
	forwarder := proxy.New(proxy.Options{UpstreamTimeout: cfg.UpstreamTimeout, UpstreamIdleTimeout: cfg.UpstreamIdleTimeout, Logger: logger, TracerProvider: tp, Proxy: egressProxy(getenv)})
	defer forwarder.Close()
	mem, summariser, err := newMemory(cfg, st, cipher, forwarder, recorder, metrics, logger)
	if err != nil {
		return err
	}
	if cfg.ManagementToken == "" {
		logger.Warn("management API disabled: MANAGEMENT_TOKEN is not set (/manage answers 404)")
	}
	var deviceLogin *sso.Service
	if c := cfg.SSO; c.Issuer != "" {
		logger.Info("sso device login enabled", "issuer", c.Issuer, "project", c.Project, "redirect_url", c.RedirectURL)
		deviceLogin = sso.New(sso.Config{
			Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: c.RedirectURL,
			AllowedDomains: c.AllowedDomains, Project: c.Project, TokenTTL: c.TokenTTL, PublicURL: cfg.PublicURL,
			StartLimit: c.StartLimit, Limiter: sh.limiter, Logger: logger,
		}, st, sh.bus, recorder)
	}
	manager := manage.New(manage.Options{
		Store: st, Cipher: cipher, Invalidator: sh.bus, Auditor: recorder, Logger: logger,
	})
	self := thisReplica()
	var cons *console.Console
	if cfg.Console.Enabled {
		o := console.Options{
			Manager: manager, Sessions: st, Failures: failures, Metrics: metrics.Gatherer(), SchemaVersion: sh.schemaVersion,
			Replicas: st, ReplicaID: self.ID,
			ManagementToken: cfg.ManagementToken, TrustedProxies: cfg.TrustedProxies,
			SessionIdle: cfg.Console.SessionIdle, SessionMax: cfg.Console.SessionMax, Logger: logger,
		}
		// config checked that CONSOLE_ADMINS comes with SSO_ISSUER.
		if len(cfg.Console.Admins) > 0 {
			o.SSO, o.Admins = deviceLogin, cfg.Console.Admins
		}
		if cons, err = console.New(o); err != nil {
			return err
		}
		if o.SSO != nil {
			deviceLogin.SetConsole(cons)
		}
	}
	srv := httpapi.New(httpapi.Deps{
		Database:           st,
		Auth:               authn,
		Failures:           failures,
		Origins:            origins,
		Admission:          sh.admission,
		Forwarder:          forwarder,
		Recorder:           recorder,
		Cache:              respCache,
		Memory:             mem,
		Manager:            manager,
		Console:            cons,
		SSO:                deviceLogin,
		Metrics:            metrics,
		Logger:             logger,
		ManagementToken:    cfg.ManagementToken,
		MetricsToken:       cfg.MetricsToken,
		MaxRequestBytes:    cfg.MaxRequestBytes,
		CacheMaxEntryBytes: cfg.CacheMaxEntryBytes,
		RequestBodyTimeout: cfg.RequestBodyTimeout,
		TrustedProxies:     cfg.TrustedProxies,
		Checks:             sh.checks,
		TracerProvider:     tp,
	})

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (LISTEN_ADDR): %w", cfg.ListenAddr, err)
	}
	hs := srv.HTTPServer(slog.NewLogLogger(logger.Handler(), slog.LevelWarn))

	// Background work outlives the request context: the recorder is
	// stopped after the HTTP server has drained (so it flushes every row
	// of a finished request), the other tasks after it.
	bgCtx := context.WithoutCancel(ctx)
	recorderTask := startTask(bgCtx, recorder.Run)
	// Its last summaries of failed authentications go through the recorder.
	failuresTask := startTask(bgCtx, failures.Run)
	sweeper := retention.New(st, retention.Options{
		Usage: cfg.Retention.Usage, Audit: cfg.Retention.Audit, Tokens: cfg.Retention.Tokens,
		Memory: memoryRetention(cfg), Interval: cfg.Retention.Interval, Logger: logger,
	})
	// The heartbeat deletes this replica's row when it stops, after the
	// drain: the cluster page lists it for as long as it serves.
	heartbeat := replica.New(st, self, logger)
	tasks := []*task{startTask(bgCtx, sh.bus.Run), startTask(bgCtx, sweeper.Run), startTask(bgCtx, heartbeat.Run)}
	// Memory's writer, like the recorder, stops after the server drained,
	// so finished requests keep their transcripts; the summariser records
	// its usage through the recorder, so it stops before it.
	var memoryTasks []*task
	if mem != nil {
		memoryTasks = []*task{startTask(bgCtx, mem.Run), startTask(bgCtx, summariser.Run)}
	}
	if sh.flush != nil {
		tasks = append(tasks, startTask(bgCtx, sh.flush))
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	logger.Info("listening", "addr", ln.Addr().String())

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		err = shutdown(cfg, logger, srv, hs)
	}
	// Handlers cut by the grace period are still recording their usage
	// (status 499, what was produced): wait for them before the recorder
	// stops (SPEC §6.4).
	waitCtx, cancelWait := context.WithTimeout(context.Background(), handlerRecordWait)
	if werr := srv.Wait(waitCtx); werr != nil {
		logger.Warn("handlers still running after the shutdown grace; their usage may be lost", "err", werr)
	}
	cancelWait()
	for _, t := range memoryTasks {
		err = errors.Join(err, t.stop())
	}
	if ferr := failuresTask.stop(); ferr != nil {
		err = errors.Join(err, fmt.Errorf("write auth blocks: %w", ferr))
	}
	if sh.closeQuota != nil {
		// Requests cut at SHUTDOWN_GRACE that still count are written to
		// the database one by one from here on.
		qctx, cancel := context.WithTimeout(bgCtx, 10*time.Second)
		if qerr := sh.closeQuota(qctx); qerr != nil {
			err = errors.Join(err, fmt.Errorf("close quota counter: %w", qerr))
		}
		cancel()
	}
	if rerr := recorderTask.stop(); rerr != nil {
		err = errors.Join(err, fmt.Errorf("flush usage: %w", rerr))
	}
	for _, t := range tasks {
		err = errors.Join(err, t.stop())
	}
	s := recorder.Stats()
	logger.Info("stopped", "usage_written", s.WrittenUsage, "usage_dropped", s.DroppedUsage, "audit_dropped", s.DroppedAudit)
	return err
}

// setupTracing starts the OTLP trace pipeline when the standard OTEL_*
// variables ask for one (SPEC §8) and installs it as the OTel global, the
// program's one global. tp is nil when tracing is off; stop flushes
// pending spans and is called last, after the usage flush.
func setupTracing(ctx context.Context, getenv func(string) string, logger *slog.Logger) (tp trace.TracerProvider, stop func(), err error) {
	tp, shutdown, err := telemetry.SetupTracing(ctx, "llm-proxy", getenv, logger)
	if err != nil {
		return nil, nil, err
	}
	if tp != nil {
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(telemetry.Propagator())
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Warn("export traces", "err", err) }))
	}
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			logger.Warn("flush traces", "err", err)
		}
	}, nil
}

// task is a background goroutine with an owner that stops and waits for it.
type task struct {
	cancel context.CancelFunc
	done   chan error
}

func startTask(ctx context.Context, run func(context.Context) error) *task {
	ctx, cancel := context.WithCancel(ctx)
	t := &task{cancel: cancel, done: make(chan error, 1)}
	go func() { t.done <- run(ctx) }()
	return t
}

// stop cancels the task and returns its error once it has finished.
func (t *task) stop() error {
	t.cancel()
	return <-t.done
}

// handlerRecordWait bounds the wait for handlers cut at SHUTDOWN_GRACE to
// record their usage: their connections are closed, so they return as soon
// as their next read or write fails.
const handlerRecordWait = 5 * time.Second

// shutdown is the order of SPEC §6.4: readiness flips, the drain delay lets
// load balancers notice, the listener closes, and in-flight requests and
// streams get SHUTDOWN_GRACE to finish. The caller then flushes usage and
// closes the pools.
func shutdown(cfg *config.Config, logger *slog.Logger, srv *httpapi.Server, hs *http.Server) error {
	srv.SetDraining()
	logger.Info("draining", "drain_delay", cfg.DrainDelay.String(), "shutdown_grace", cfg.ShutdownGrace.String())
	time.Sleep(cfg.DrainDelay)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		logger.Warn("shutdown grace elapsed; closing remaining connections", "err", err)
		return hs.Close()
	}
	return nil
}

// openStore opens the configured database and brings its schema to this
// build's version according to SPEC §5 (apply, refuse, or warn). tracer
// traces PostgreSQL statements (nil for none; SQLite is not traced).
func openStore(ctx context.Context, cfg *config.Config, logger *slog.Logger, tracer pgx.QueryTracer) (store.Store, error) {
	db := cfg.Database
	var (
		st        store.Store
		schemaDSN string
	)
	switch db.Driver {
	case schema.DriverSQLite:
		if len(db.PoolSettings) > 0 {
			logger.Warn("database pool settings are ignored for SQLite", "settings", db.PoolSettings)
		}
		s, err := sqlite.Open(ctx, sqlite.Options{Path: db.Path, Echo: db.Echo, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open database %s: %w", db.Masked(), err)
		}
		st, schemaDSN = s, s.SchemaDSN()
	case schema.DriverPostgres:
		s, err := postgres.Open(ctx, postgres.Options{
			URL: db.URL, PoolSize: db.PoolSize, MaxOverflow: db.MaxOverflow, PoolTimeout: db.PoolTimeout,
			MaxIdleConns: db.MaxIdleConns, ConnMaxLifetime: db.ConnMaxLifetime, Echo: db.Echo, EchoPool: db.EchoPool, Logger: logger,
			Tracer: tracer,
		})
		if err != nil {
			return nil, fmt.Errorf("open database %s: %w", db.Masked(), err)
		}
		st, schemaDSN = s, db.URL
	default:
		return nil, fmt.Errorf("unknown database driver %q", db.Driver)
	}
	m, err := schema.New(ctx, db.Driver, schemaDSN, logger)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	err = m.Check(ctx, db.AutoMigrate)
	if cerr := m.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close migrator: %w", cerr)
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// loadCipher returns the cipher for upstream keys: ENCRYPTION_KEY when set;
// on SQLite without it, a key file beside the database (created on first
// start). Configuration loading already demands the key for PostgreSQL,
// where every replica must share it.
func loadCipher(cfg *config.Config, logger *slog.Logger) (*secret.Cipher, error) {
	key := cfg.EncryptionKey
	if key == nil {
		if cfg.Database.Driver != schema.DriverSQLite {
			return nil, errors.New("ENCRYPTION_KEY is required with PostgreSQL")
		}
		if cfg.Database.Path == ":memory:" {
			key = make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return nil, fmt.Errorf("generate encryption key: %w", err)
			}
		} else {
			path := secret.KeyFileBeside(cfg.Database.Path)
			var created bool
			var err error
			if key, created, err = secret.LoadOrCreateKeyFile(path); err != nil {
				return nil, fmt.Errorf("encryption key file: %w", err)
			}
			if created {
				logger.Warn("ENCRYPTION_KEY not set: generated a key file beside the database; back it up with the database", "path", path)
			}
		}
	}
	c, err := secret.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("ENCRYPTION_KEY: %w", err)
	}
	return c, nil
}

// egressProxy returns net/http's standard choice of egress proxy
// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, upper or lower case) for upstream
// URLs, read through getenv, or nil when neither proxy variable is set, so
// that every upstream is reached directly.
func egressProxy(getenv func(string) string) func(*url.URL) (*url.URL, error) {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := getenv(k); v != "" {
				return v
			}
		}
		return ""
	}
	c := httpproxy.Config{
		HTTPProxy:  first("HTTP_PROXY", "http_proxy"),
		HTTPSProxy: first("HTTPS_PROXY", "https_proxy"),
		NoProxy:    first("NO_PROXY", "no_proxy"),
	}
	if c.HTTPProxy == "" && c.HTTPSProxy == "" {
		return nil
	}
	return c.ProxyFunc()
}
