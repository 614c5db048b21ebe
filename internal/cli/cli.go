// Package cli is the bootstrap command line of the proxy binary:
// `proxy project ...` and `proxy token ...` work on the configured database
// directly, so an operator can create the first project and token before
// any MANAGEMENT_TOKEN exists. It has no auth cache of its own to
// invalidate: a running server sees its changes when its cache entries
// expire (AUTH_CACHE_TTL) or through invalidation broadcasts.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Commands lists the command names Run accepts as its first argument.
var Commands = []string{"project", "token"}

const projectUsage = `Usage:
  proxy project create --name NAME [--provider openai|anthropic|azure] [--base-url URL]
                       --api-key-env VAR [--api-version V] [--rpm N] [--tpm N]
                       [--allowed-origins O,O] [--allowed-models P,P] [--cache-ttl N] [--json]
  proxy project list [--json]

The upstream API key is read from the environment variable named by --api-key-env,
never from a flag, so it does not show in the process list.
`

const tokenUsage = `Usage:
  proxy token create --project NAME_OR_ID [--ttl 24h] [--max-requests N] [--rpm N] [--tpm N]
                     [--allowed-models P,P] [--label L] [--json]
  proxy token revoke ID [--json]
  proxy token list [--project NAME_OR_ID] [--json]

The secret of a new token is printed once, by token create.
`

const commonUsage = `
These commands open the database of the usual configuration (DATABASE_URL,
CONFIG_FILE, ...) directly, so run them while no SQLite server holds it; on
a running server use the management API (/manage) instead.
"proxy %s <command> --help" lists a command's flags.
`

// Usage writes the help of command ("project" or "token") to w.
func Usage(w io.Writer, command string) error {
	text := projectUsage
	if command == "token" {
		text = tokenUsage
	}
	_, err := fmt.Fprintf(w, text+commonUsage, command)
	return err
}

// UsageError is a command-line or validation mistake; its message names the
// flag to fix.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Backend is what a command works on: the opened database, the cipher of
// upstream keys and the logger.
type Backend struct {
	Store  store.Store
	Cipher *secret.Cipher
	Logger *slog.Logger
}

// Options are a command's surroundings.
type Options struct {
	Stdout, Stderr io.Writer
	// Getenv reads the variable named by --api-key-env.
	Getenv func(string) string
	// Open opens the configured database; it is called only once the
	// command line is valid, and Run closes the Store.
	Open func(ctx context.Context) (Backend, error)
}

// cliActor is the audit actor of every CLI change.
const cliActor = "cli"

// flagOf maps a manage field name to this CLI's flag, so validation errors
// name what the operator typed.
func flagOf(field string) string {
	switch field {
	case "base_url":
		return "--base-url"
	case "api_key":
		return "--api-key-env"
	case "api_version":
		return "--api-version"
	case "rpm_limit":
		return "--rpm"
	case "tpm_limit":
		return "--tpm"
	case "project_id":
		return "--project"
	case "duration_minutes", "expires_at":
		return "--ttl"
	case "max_requests":
		return "--max-requests"
	case "allowed_origins":
		return "--allowed-origins"
	case "allowed_models":
		return "--allowed-models"
	case "cache_ttl_seconds":
		return "--cache-ttl"
	default: // name, provider, label
		return "--" + field
	}
}

// Run runs one project or token command (args[0] is "project" or "token").
// Help (-h, --help, help) goes to stdout and returns nil. Command-line and
// validation mistakes are UsageErrors naming the flag; a token secret is
// written to stdout exactly once, by token create.
func Run(ctx context.Context, args []string, opts Options) error {
	if len(args) == 2 && (args[1] == "-h" || args[1] == "--help" || args[1] == "-help" || args[1] == "help") {
		return Usage(opts.Stdout, args[0])
	}
	if len(args) < 2 {
		var b strings.Builder
		_ = Usage(&b, args[0])
		return UsageError{Msg: fmt.Sprintf("proxy %s: missing command\n%s", args[0], b.String())}
	}
	c := &cli{opts: opts, command: args[0] + " " + args[1]}
	var run func(context.Context, []string) error
	switch c.command {
	case "project create":
		run = c.projectCreate
	case "project list":
		run = c.projectList
	case "token create":
		run = c.tokenCreate
	case "token revoke":
		run = c.tokenRevoke
	case "token list":
		run = c.tokenList
	default:
		return UsageError{Msg: fmt.Sprintf("unknown command %q (see: proxy %s --help)", c.command, args[0])}
	}
	err := run(ctx, args[2:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	var ve *manage.ValidationError
	if errors.As(err, &ve) {
		return UsageError{Msg: flagOf(ve.Field) + ": " + ve.Message}
	}
	return err
}

// cli holds one command's surroundings, flags and, once opened, its Service.
type cli struct {
	opts    Options
	command string
	json    bool
	svc     *manage.Service
}

// flags returns the command's flag set with the common --json flag.
func (c *cli) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("proxy "+c.command, flag.ContinueOnError)
	// parse prints the help; other mistakes are returned, not printed.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	return fs
}

// parse parses flags and positional arguments in any order and checks the
// number of positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, positional ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(c.opts.Stdout, "Usage of proxy %s:\n", c.command)
				fs.SetOutput(c.opts.Stdout)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, UsageError{Msg: fmt.Sprintf("proxy %s: %v", c.command, err)}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != len(positional) {
		want := "no arguments"
		if len(positional) > 0 {
			want = strings.Join(positional, " ")
		}
		return nil, UsageError{Msg: fmt.Sprintf("proxy %s: takes %s, got %d argument(s)", c.command, want, len(pos))}
	}
	return pos, nil
}

// open opens the database and builds the Service. The returned function
// closes the database.
func (c *cli) open(ctx context.Context) (func(), error) {
	b, err := c.opts.Open(ctx)
	if err != nil {
		return nil, err
	}
	c.svc = manage.New(manage.Options{Store: b.Store, Cipher: b.Cipher, Logger: b.Logger,
		Auditor: &storeAuditor{ctx: context.WithoutCancel(ctx), st: b.Store, logger: b.Logger}})
	return func() {
		if err := b.Store.Close(); err != nil {
			b.Logger.Warn("close database", "err", err)
		}
	}, nil
}

// storeAuditor writes each audit event at once: the CLI exits right after
// its one call, so there is no batch to wait for.
type storeAuditor struct {
	ctx    context.Context
	st     store.Store
	logger *slog.Logger
}

func (a *storeAuditor) Audit(ev store.AuditEvent) {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	if err := a.st.InsertAuditEvents(ctx, []store.AuditEvent{ev}); err != nil {
		a.logger.Error("write audit event", "action", ev.Action, "err", err)
	}
}

// audit records the outcome of the command.
func (c *cli) audit(action, projectID, tokenID string, err error) {
	outcome, reason := manage.Outcome(err)
	md := map[string]any{"command": c.command}
	if u, uerr := user.Current(); uerr == nil {
		md["os_user"] = u.Username
	}
	c.svc.Audit(store.AuditEvent{Actor: cliActor, Action: action, Outcome: outcome, Reason: reason,
		ProjectID: projectID, TokenID: tokenID, Metadata: md})
}

func (c *cli) projectCreate(ctx context.Context, args []string) error {
	fs := c.flags()
	var in manage.CreateProjectInput
	var keyEnv string
	fs.StringVar(&in.Name, "name", "", "project name (unique, 1-100 characters)")
	fs.StringVar(&in.Provider, "provider", "openai", "openai, anthropic or azure")
	fs.StringVar(&in.BaseURL, "base-url", "", "upstream API root (default: the provider's; required for azure)")
	fs.StringVar(&keyEnv, "api-key-env", "", "name of the environment variable holding the upstream API key")
	fs.StringVar(&in.APIVersion, "api-version", "", "Azure API version (default "+proxy.DefaultAPIVersion+")")
	fs.IntVar(&in.RPMLimit, "rpm", 0, "requests per minute for the whole project (0: unlimited)")
	fs.IntVar(&in.TPMLimit, "tpm", 0, "tokens per minute for the whole project (0: unlimited)")
	fs.Var((*listFlag)(&in.AllowedOrigins), "allowed-origins", "comma-separated browser origins (https://app.example.com, or *; default: none)")
	fs.Var((*listFlag)(&in.AllowedModels), "allowed-models", "comma-separated model patterns, * matching anything (gpt-4.1-*; default: any model)")
	fs.IntVar(&in.CacheTTLSeconds, "cache-ttl", 0, "seconds responses are cached by default (0: only when a request asks)")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if keyEnv == "" {
		return UsageError{Msg: "--api-key-env: required: the name of an environment variable holding the upstream API key"}
	}
	if in.APIKey = c.opts.Getenv(keyEnv); strings.TrimSpace(in.APIKey) == "" {
		return UsageError{Msg: fmt.Sprintf("--api-key-env: environment variable %s is unset or empty", keyEnv)}
	}
	closeDB, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	p, err := c.svc.CreateProject(ctx, in)
	var id string
	if p != nil {
		id = p.ID
	}
	c.audit("project.create", id, "", err)
	if err != nil {
		return err
	}
	return c.printProjects(manage.NewProjectView(p))
}

func (c *cli) projectList(ctx context.Context, args []string) error {
	if _, err := c.parse(c.flags(), args); err != nil {
		return err
	}
	closeDB, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	var views []manage.ProjectView
	err = eachPage(func(pq manage.PageQuery) (int, error) {
		l, err := c.svc.ListProjects(ctx, manage.ProjectQuery{PageQuery: pq})
		if err != nil {
			return 0, err
		}
		for _, p := range l.Items {
			views = append(views, manage.NewProjectView(p))
		}
		return l.Total, nil
	})
	c.audit("project.list", "", "", err)
	if err != nil {
		return err
	}
	return c.printProjects(views...)
}

func (c *cli) tokenCreate(ctx context.Context, args []string) error {
	fs := c.flags()
	var (
		in      manage.CreateTokenInput
		project string
		maxReq  int64
	)
	fs.StringVar(&project, "project", "", "project name or ID")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token, 1m to 8760h")
	fs.Int64Var(&maxReq, "max-requests", 0, "requests the token may make (0: unlimited)")
	fs.IntVar(&in.RPMLimit, "rpm", 0, "requests per minute for this token (0: unlimited)")
	fs.IntVar(&in.TPMLimit, "tpm", 0, "tokens per minute for this token (0: unlimited)")
	fs.Var((*listFlag)(&in.AllowedModels), "allowed-models", "comma-separated model patterns narrowing the project's (default: the project's)")
	fs.StringVar(&in.Label, "label", "", "free text, up to 200 characters")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if project == "" {
		return UsageError{Msg: "--project: required: the project's name or ID"}
	}
	if *ttl < manage.MinTokenTTL || *ttl > manage.MaxTokenTTL {
		return UsageError{Msg: "--ttl: must be between 1m and 8760h"}
	}
	in.MaxRequests = &maxReq
	closeDB, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	var ct *manage.CreatedToken
	p, err := c.svc.FindProject(ctx, project)
	if err == nil {
		in.ProjectID = p.ID
		expires := time.Now().Add(*ttl)
		in.ExpiresAt = &expires
		ct, err = c.svc.CreateToken(ctx, in)
	}
	var projectID, tokenID string
	if p != nil {
		projectID = p.ID
	}
	if ct != nil {
		tokenID = ct.Token.ID
	}
	c.audit("token.create", projectID, tokenID, err)
	if errors.Is(err, store.ErrNotFound) {
		return UsageError{Msg: fmt.Sprintf("--project: no project with ID or name %q", project)}
	}
	if err != nil {
		return err
	}
	v := manage.NewCreatedTokenView(ct)
	if c.json {
		return c.printJSON(v)
	}
	fmt.Fprintf(c.opts.Stdout, "token:        %s\n", v.Token)
	fmt.Fprintf(c.opts.Stdout, "id:           %s\nproject:      %s (%s)\nexpires_at:   %s\nmax_requests: %s\n",
		v.ID, p.Name, v.ProjectID, v.ExpiresAt.Format(time.RFC3339), limitText(v.MaxRequests))
	fmt.Fprintln(c.opts.Stderr, "Store the token now: it is not shown again.")
	return nil
}

func (c *cli) tokenRevoke(ctx context.Context, args []string) error {
	pos, err := c.parse(c.flags(), args, "ID")
	if err != nil {
		return err
	}
	closeDB, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	t, err := c.svc.RevokeToken(ctx, pos[0])
	var projectID string
	if t != nil {
		projectID = t.ProjectID
	}
	c.audit("token.revoke", projectID, pos[0], err)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no token with ID %q", pos[0])
	}
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(manage.NewTokenView(t))
	}
	fmt.Fprintf(c.opts.Stdout, "revoked token %s (%s)\n", t.ID, t.Prefix)
	return nil
}

func (c *cli) tokenList(ctx context.Context, args []string) error {
	fs := c.flags()
	project := fs.String("project", "", "only tokens of this project (name or ID)")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	closeDB, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	var q manage.TokenQuery
	if *project != "" {
		p, err := c.svc.FindProject(ctx, *project)
		if errors.Is(err, store.ErrNotFound) {
			return UsageError{Msg: fmt.Sprintf("--project: no project with ID or name %q", *project)}
		}
		if err != nil {
			return err
		}
		q.ProjectID = p.ID
	}
	var views []manage.TokenView
	err = eachPage(func(pq manage.PageQuery) (int, error) {
		q.PageQuery = pq
		l, err := c.svc.ListTokens(ctx, q)
		if err != nil {
			return 0, err
		}
		for _, t := range l.Items {
			views = append(views, manage.NewTokenView(t))
		}
		return l.Total, nil
	})
	c.audit("token.list", q.ProjectID, "", err)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(orEmpty(views))
	}
	w := tabwriter.NewWriter(c.opts.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tPROJECT\tPREFIX\tLABEL\tEXPIRES\tACTIVE\tREQUESTS\tMAX")
	for _, t := range views {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\t%d\t%s\n", t.ID, t.ProjectID, t.Prefix, t.Label,
			t.ExpiresAt.Format(time.RFC3339), t.IsActive, t.RequestCount, limitText(t.MaxRequests))
	}
	return w.Flush()
}

// eachPage calls list with successive pages of the largest size until it
// has seen total records.
func eachPage(list func(manage.PageQuery) (total int, err error)) error {
	for page := 1; ; page++ {
		total, err := list(manage.PageQuery{Page: page, PageSize: manage.MaxPageSize})
		if err != nil || page*manage.MaxPageSize >= total {
			return err
		}
	}
}

func (c *cli) printProjects(views ...manage.ProjectView) error {
	if c.json {
		if c.command == "project create" {
			return c.printJSON(views[0])
		}
		return c.printJSON(orEmpty(views))
	}
	w := tabwriter.NewWriter(c.opts.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tPROVIDER\tBASE_URL\tAPI_KEY\tACTIVE\tRPM\tTPM")
	for _, p := range views {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\t%d\t%d\n", p.ID, p.Name, p.Provider, p.BaseURL,
			p.APIKeyMasked, p.IsActive, p.RPMLimit, p.TPMLimit)
	}
	return w.Flush()
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.opts.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// orEmpty makes an empty list print as [] rather than null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// listFlag is a comma-separated list flag; repeating it appends.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

func limitText(n *int64) string {
	if n == nil {
		return "unlimited"
	}
	return strconv.FormatInt(*n, 10)
}
