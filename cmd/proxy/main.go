// Command proxy is the LLM Proxy server (SPEC §1): `proxy [flags]` serves
// the gateway; `proxy project|token ...` manage projects and tokens
// directly on the configured database (package cli).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/llmproxy/llm-proxy/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
	}
	os.Exit(config.ExitStatus(err))
}

// usageError is a command-line mistake (exit status 2).
type usageError = config.UsageError
