package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpListsOnlyTheSettingsMigrateUses(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"up", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), args, func(string) string { return "" }, &stdout, &stderr); err != nil {
				t.Fatalf("err = %v, want nil (exit 0)", err)
			}
			if stderr.Len() > 0 {
				t.Errorf("help wrote to stderr: %s", stderr.String())
			}
			out := stdout.String()
			for _, want := range []string{"Usage:\n  migrate <verb> [flags]", "--database-url", "DB_DRIVER", "DATABASE_PATH",
				"--config", "--log-level", "--log-format", "--wait", "--timeout",
				"--from", "--to", "--truncate", "ENCRYPTION_KEY", "SOURCE_ENCRYPTION_KEY"} {
				if !strings.Contains(out, want) {
					t.Errorf("help lacks %q:\n%s", want, out)
				}
			}
			for _, unwanted := range []string{"Usage: migrate [flags]", "--listen-addr", "MANAGEMENT_TOKEN", "DRAIN_DELAY",
				"SHUTDOWN_GRACE", "REDIS_URL", "DATABASE_POOL_SIZE", "--database-auto-migrate", "USAGE_BATCH_SIZE"} {
				if strings.Contains(out, unwanted) {
					t.Errorf("help lists %q, which migrate does not use:\n%s", unwanted, out)
				}
			}
		})
	}
}
