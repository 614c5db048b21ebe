// Command migrate applies, inspects and repairs the database schema
// (SPEC §5): `migrate <verb> [flags]`, with the same database settings as
// the proxy.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/llmproxy/llm-proxy/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

// exitStatus reports err (if any) on stderr as the binary does and returns
// the process's exit status for it.
func exitStatus(err error, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintln(stderr, "migrate:", err)
		if errors.As(err, new(usageError)) {
			fmt.Fprintln(stderr, "see: migrate help")
		}
	}
	return config.ExitStatus(err)
}

// usageError is a command-line mistake (exit status 2).
type usageError = config.UsageError
