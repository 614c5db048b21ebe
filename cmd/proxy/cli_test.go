package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
)

const cliUpstreamKey = "sk-cli-upstream-key-0123456789"

// cliEnv is an environment pointing the CLI's configuration at a fresh
// SQLite database; it returns the database path and the encryption key.
func cliEnv(t *testing.T) (cliRunner, string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db", "proxy.db")
	key := bytes.Repeat([]byte{9}, secret.KeySize)
	env := map[string]string{
		"DATABASE_URL":          "sqlite:///" + path,
		"ENCRYPTION_KEY":        base64.StdEncoding.EncodeToString(key),
		"LOG_LEVEL":             "warn",
		"CLI_TEST_UPSTREAM_KEY": cliUpstreamKey,
	}
	return cliRunner(func(k string) string { return env[k] }), path, key
}

// cliRunner runs commands in process with its environment.
type cliRunner func(string) string

// run runs one command and returns its stdout and stderr.
func (env cliRunner) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), args, env, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func (env cliRunner) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := env.run(t, args...)
	if err != nil {
		t.Fatalf("%v: %v\nstderr: %s", args, err, errOut)
	}
	return out
}

// inspect opens the database between CLI runs (one process may hold the
// SQLite file at a time).
func inspect(t *testing.T, path string, f func(st store.Store)) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f(st)
}

func TestCLIProjectAndTokenLifecycle(t *testing.T) {
	t.Parallel()
	cli, path, key := cliEnv(t)

	out := cli.must(t, "project", "create", "--name", "team-a", "--api-key-env", "CLI_TEST_UPSTREAM_KEY", "--rpm", "30",
		"--allowed-origins", "https://app.example.com, http://localhost:5173", "--allowed-models", "gpt-4.1-*",
		"--allowed-models", "o3", "--cache-ttl", "60", "--json")
	if strings.Contains(out, cliUpstreamKey) {
		t.Fatalf("output shows the upstream key: %s", out)
	}
	var p manage.ProjectView
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("project create --json: %v\n%s", err, out)
	}
	if p.Name != "team-a" || p.Provider != "openai" || p.BaseURL != proxy.DefaultBaseURL(store.ProviderOpenAI) || p.RPMLimit != 30 || p.APIKeyMasked != "sk-...6789" ||
		!slices.Equal(p.AllowedOrigins, []string{"https://app.example.com", "http://localhost:5173"}) ||
		!slices.Equal(p.AllowedModels, []string{"gpt-4.1-*", "o3"}) || p.CacheTTLSeconds != 60 {
		t.Fatalf("project = %+v", p)
	}
	cipher, err := secret.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	inspect(t, path, func(st store.Store) {
		got, err := st.GetProjectByName(t.Context(), "team-a")
		if err != nil {
			t.Fatal(err)
		}
		plain, err := cipher.Decrypt(got.APIKeyEncrypted)
		if err != nil || string(plain) != cliUpstreamKey || got.ID != p.ID {
			t.Fatalf("stored project %+v: key %q, %v", got, plain, err)
		}
	})

	out = cli.must(t, "token", "create", "--project", "team-a", "--ttl", "2h", "--max-requests", "5", "--label", "ci",
		"--allowed-models", "gpt-4.1-mini", "--json")
	var tok manage.CreatedTokenView
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token create --json: %v\n%s", err, out)
	}
	if tok.ProjectID != p.ID || tok.MaxRequests == nil || *tok.MaxRequests != 5 || tok.Label != "ci" || !strings.HasPrefix(tok.Token, "sk-") ||
		!slices.Equal(tok.AllowedModels, []string{"gpt-4.1-mini"}) {
		t.Fatalf("token = %+v", tok)
	}
	if d := time.Until(tok.ExpiresAt); d < 119*time.Minute || d > 121*time.Minute {
		t.Fatalf("expires_at %v is not about 2h ahead", tok.ExpiresAt)
	}

	// By ID too, in table form: the secret is printed exactly once.
	out = cli.must(t, "token", "create", "--project", p.ID)
	secrets := 0
	for f := range strings.FieldsSeq(out) {
		if strings.HasPrefix(f, "sk-") && len(f) == auth.TokenLen {
			secrets++
		}
	}
	if secrets != 1 || !strings.Contains(out, "unlimited") {
		t.Fatalf("table output should show one secret and unlimited max_requests:\n%s", out)
	}

	out = cli.must(t, "token", "list", "--project", "team-a", "--json")
	var list []manage.TokenView
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("token list --json: %v\n%s", err, out)
	}
	if len(list) != 2 || strings.Contains(out, tok.Token) || strings.Contains(out, auth.Hash(tok.Token)) {
		t.Fatalf("token list shows %d tokens (want 2) or a secret/hash:\n%s", len(list), out)
	}

	for range 2 {
		cli.must(t, "token", "revoke", tok.ID)
	}
	out = cli.must(t, "token", "revoke", "--json", tok.ID)
	var revoked manage.TokenView
	if err := json.Unmarshal([]byte(out), &revoked); err != nil || revoked.IsActive || revoked.DeactivatedAt == nil {
		t.Fatalf("revoke --json: %+v, %v", revoked, err)
	}
	inspect(t, path, func(st store.Store) {
		got, _, err := st.GetTokenAndProjectByHash(t.Context(), auth.Hash(tok.Token))
		if err != nil {
			t.Fatal(err)
		}
		if got.IsActive || got.ID != tok.ID {
			t.Fatalf("after revoke: %+v", got)
		}
		evs, _, err := st.ListAuditEvents(t.Context(), store.AuditFilter{Page: store.Page{Page: 1, PageSize: 100}})
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for _, ev := range evs {
			if ev.Actor != "cli" || ev.Outcome != store.OutcomeSuccess {
				t.Errorf("audit event %+v", ev)
			}
			counts[ev.Action]++
		}
		want := map[string]int{"project.create": 1, "token.create": 2, "token.list": 1, "token.revoke": 3}
		for a, n := range want {
			if counts[a] != n {
				t.Errorf("%s audit events: %d, want %d (all: %v)", a, counts[a], n, counts)
			}
		}
	})

	out = cli.must(t, "project", "list")
	if !strings.Contains(out, "team-a") || !strings.Contains(out, "sk-...6789") || strings.Contains(out, cliUpstreamKey) {
		t.Fatalf("project list table:\n%s", out)
	}
	out = cli.must(t, "project", "list", "--json")
	var projects []manage.ProjectView
	if err := json.Unmarshal([]byte(out), &projects); err != nil || len(projects) != 1 {
		t.Fatalf("project list --json: %v\n%s", err, out)
	}
}

func TestCLIErrors(t *testing.T) {
	t.Parallel()
	cli, _, _ := cliEnv(t)
	cli.must(t, "project", "create", "--name", "p", "--api-key-env", "CLI_TEST_UPSTREAM_KEY")
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool // a usageError (exit status 2)
	}{
		{"ttl too short", []string{"token", "create", "--project", "p", "--ttl", "30s"}, "--ttl: must be between 1m and 8760h", true},
		{"ttl too long", []string{"token", "create", "--project", "p", "--ttl", "8761h"}, "--ttl: must be between 1m and 8760h", true},
		{"no project", []string{"token", "create"}, "--project", true},
		{"unknown project", []string{"token", "create", "--project", "nope"}, `--project: no project with ID or name "nope"`, true},
		{"negative max requests", []string{"token", "create", "--project", "p", "--max-requests", "-1"}, "--max-requests:", true},
		{"long label", []string{"token", "create", "--project", "p", "--label", strings.Repeat("x", 201)}, "--label:", true},
		{"bad provider", []string{"project", "create", "--name", "q", "--provider", "cohere", "--api-key-env", "CLI_TEST_UPSTREAM_KEY"}, "--provider:", true},
		{"azure without base url", []string{"project", "create", "--name", "q", "--provider", "azure", "--api-key-env", "CLI_TEST_UPSTREAM_KEY"}, "--base-url:", true},
		{"negative rpm", []string{"project", "create", "--name", "q", "--rpm", "-1", "--api-key-env", "CLI_TEST_UPSTREAM_KEY"}, "--rpm:", true},
		{"malformed origin", []string{"project", "create", "--name", "q", "--allowed-origins", "app.example.com", "--api-key-env", "CLI_TEST_UPSTREAM_KEY"}, "--allowed-origins:", true},
		{"bad cache ttl", []string{"project", "create", "--name", "q", "--cache-ttl", "-1", "--api-key-env", "CLI_TEST_UPSTREAM_KEY"}, "--cache-ttl:", true},
		{"no api key env", []string{"project", "create", "--name", "q"}, "--api-key-env: required", true},
		{"empty api key env", []string{"project", "create", "--name", "q", "--api-key-env", "CLI_TEST_EMPTY"}, "CLI_TEST_EMPTY is unset or empty", true},
		{"api key as a flag", []string{"project", "create", "--name", "q", "--api-key", "sk-x"}, "flag provided but not defined", true},
		{"duplicate name", []string{"project", "create", "--name", "p", "--api-key-env", "CLI_TEST_UPSTREAM_KEY"}, "project name \"p\" is taken", false},
		{"revoke without id", []string{"token", "revoke"}, "takes ID", true},
		{"revoke unknown", []string{"token", "revoke", "00000000-0000-0000-0000-000000000000"}, "no token with ID", false},
		{"unknown command", []string{"token", "rotate"}, `unknown command "token rotate"`, true},
		{"missing subcommand", []string{"project"}, "proxy project: missing command", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := cli.run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			var ue usageError
			if errors.As(err, &ue) != tt.usage {
				t.Fatalf("err %v: usageError = %t, want %t", err, !tt.usage, tt.usage)
			}
		})
	}
	if _, _, err := cli.run(t, "token", "list", "-h"); err != nil {
		t.Fatalf("-h: %v", err)
	}
}
