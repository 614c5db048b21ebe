package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
)

func TestHelpGoesToStdoutAndExits0(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"proxy project <command>", "proxy token <command>", "proxy help [command]", "--listen-addr", "MANAGEMENT_TOKEN"}},
		{[]string{"-h"}, []string{"proxy project <command>", "--listen-addr"}},
		{[]string{"help"}, []string{"proxy project <command>", "proxy token <command>", "--listen-addr"}},
		{[]string{"help", "project"}, []string{"proxy project create --name NAME", "proxy project list", "--api-key-env"}},
		{[]string{"help", "token"}, []string{"proxy token create --project", "proxy token revoke ID", "proxy token list"}},
		{[]string{"project", "--help"}, []string{"proxy project create --name NAME", "proxy project list"}},
		{[]string{"token", "help"}, []string{"proxy token revoke ID"}},
		{[]string{"project", "create", "--help"}, []string{"Usage of proxy project create:", "-api-key-env", "-rpm"}},
		{[]string{"token", "list", "-h"}, []string{"Usage of proxy token list:", "-project"}},
		{[]string{"help", "login"}, []string{"proxy login --url URL", "PROXY_URL"}},
		{[]string{"login", "--help"}, []string{"proxy login --url URL"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), tc.args, noEnv, &stdout, &stderr); err != nil {
				t.Fatalf("err = %v, want nil (exit 0)", err)
			}
			if stderr.Len() > 0 {
				t.Errorf("help wrote to stderr: %s", stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
		})
	}
}

func TestUnknownCommandsExit2(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, `unknown command "serve" (commands: project, token, login; see: proxy help)`},
		{[]string{"help", "serve"}, `help: unknown command "serve" (commands: project, token, login)`},
		{[]string{"login", "--bogus"}, "login: flag provided but not defined: -bogus"},
		{[]string{"login", "--url", "ftp://x"}, "--url (or PROXY_URL) must be"},
		{[]string{"login", "--url", "http://x", "extra"}, `unexpected argument "extra"`},
		{[]string{"token", "rotate"}, `unknown command "token rotate" (see: proxy token --help)`},
		{[]string{"project"}, "proxy project: missing command"},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(t.Context(), tc.args, noEnv, &stdout, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if code := config.ExitStatus(err); code != 2 {
				t.Fatalf("exit status %d, want 2", code)
			}
			if stdout.Len() > 0 {
				t.Errorf("a mistake wrote to stdout: %s", stdout.String())
			}
		})
	}
}

func TestCLIOnADatabaseAServerHolds(t *testing.T) {
	t.Parallel()
	cli, path, _ := cliEnv(t)
	st, err := sqlite.Open(t.Context(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, _, err = cli.run(t, "project", "list")
	if err == nil || !strings.Contains(err.Error(), "in use by a running proxy server: stop the server first") ||
		!strings.Contains(err.Error(), "management API") || strings.Contains(err.Error(), "PostgreSQL") {
		t.Fatalf("err = %v, want advice to stop the server or use the management API", err)
	}
	if got := filepath.Base(path); !strings.Contains(err.Error(), got) {
		t.Errorf("err %v does not name the database %s", err, got)
	}
}
