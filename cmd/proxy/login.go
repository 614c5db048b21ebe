package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/llmproxy/llm-proxy/internal/sso"
)

const loginUsage = `Usage:
  proxy login --url URL [--name LABEL]

Runs the agent side of the SSO device login against a running proxy: it
prints a link to open in a browser, waits while you sign in and approve,
then prints the agent token (sk-agent-...) on stdout. --url defaults to
PROXY_URL; --name labels the device (default: this host's name).
`

// runLogin runs `proxy login`.
func runLogin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxy login", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	base := fs.String("url", getenv("PROXY_URL"), "the proxy's URL")
	host, _ := os.Hostname()
	name := fs.String("name", host, "the device's label")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, err := io.WriteString(stdout, loginUsage)
			return err
		}
		return usageError{Msg: "login: " + err.Error() + " (see: proxy help login)"}
	}
	if fs.NArg() > 0 {
		return usageError{Msg: fmt.Sprintf("login: unexpected argument %q (see: proxy help login)", fs.Arg(0))}
	}
	if !strings.HasPrefix(*base, "http://") && !strings.HasPrefix(*base, "https://") {
		return usageError{Msg: "login: --url (or PROXY_URL) must be the proxy's http:// or https:// URL"}
	}
	tok, err := sso.Login(ctx, sso.LoginOptions{BaseURL: *base, Label: *name, Prompt: stderr})
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
