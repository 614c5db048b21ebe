// Command migrate applies, inspects and repairs the database schema
// (SPEC §5): `migrate <verb> [flags]`, with the same database settings as
// the proxy.
package main

import (
	"context"
	"errors"
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
		fmt.Fprintln(os.Stderr, "migrate:", err)
		if errors.As(err, new(usageError)) {
			fmt.Fprintln(os.Stderr, "see: migrate help")
		}
	}
	os.Exit(config.ExitStatus(err))
}

// usageError is a command-line mistake (exit status 2).
type usageError = config.UsageError
