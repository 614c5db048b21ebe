package config

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the configuration table in the repository's README.md")

const (
	tableStart = "<!-- config-table:start -->"
	tableEnd   = "<!-- config-table:end -->"
)

// withTable returns readme with the text between the markers replaced by
// table, or with the markers and table appended when the markers are absent.
func withTable(readme, table string) string {
	section := tableStart + "\n" + table + tableEnd
	start := strings.Index(readme, tableStart)
	end := strings.Index(readme, tableEnd)
	if start < 0 || end < start {
		if readme != "" && !strings.HasSuffix(readme, "\n") {
			readme += "\n"
		}
		if readme != "" {
			readme += "\n"
		}
		return readme + section + "\n"
	}
	return readme[:start] + section + readme[end+len(tableEnd):]
}

func TestREADME(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	want := withTable(string(data), MarkdownTable())
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatalf("README.md is missing; run: go test ./internal/config -run TestREADME -update")
	}
	if string(data) != want {
		t.Fatalf("README.md's configuration table (between %s and %s) is missing or out of date; run: go test ./internal/config -run TestREADME -update", tableStart, tableEnd)
	}
}

func TestWithTable(t *testing.T) {
	tests := []struct{ name, readme, want string }{
		{name: "empty file", readme: "", want: tableStart + "\nT\n" + tableEnd + "\n"},
		{name: "no markers", readme: "# Title\ntext", want: "# Title\ntext\n\n" + tableStart + "\nT\n" + tableEnd + "\n"},
		{
			name:   "replaces between markers only",
			readme: "# A\n" + tableStart + "\nold\nrows\n" + tableEnd + "\n## B\n",
			want:   "# A\n" + tableStart + "\nT\n" + tableEnd + "\n## B\n",
		},
	}
	for _, tt := range tests {
		got := withTable(tt.readme, "T\n")
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		if again := withTable(got, "T\n"); again != got {
			t.Errorf("%s: not idempotent: %q", tt.name, again)
		}
	}
}

func TestMarkdownTable(t *testing.T) {
	table := MarkdownTable()
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if got, want := len(lines), len(fields())+2; got != want {
		t.Fatalf("table has %d lines, want %d:\n%s", got, want, table)
	}
	for _, want := range []string{
		"| `DATABASE_URL` | `--database-url` | `database.url` | `sqlite:///./var/db/proxy.db` |",
		"| `DATABASE_MAX_IDLE_CONNS` | — | `database.max_idle_conns` | `= pool_size` |",
		"| `DB_DRIVER` | — | — | — |",
		"| `LOG_FORMAT` | `--log-format` | `log.format` | `json` | json or text |",
		"| `USAGE_BATCH_SIZE` | — | `usage.batch_size` | `500` |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	for i, line := range lines {
		if n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|"); n != 6 {
			t.Errorf("line %d has %d cell separators, want 6: %s", i, n, line)
		}
	}
}

// TestSettingsTable keeps the struct tags consistent: every setting has an
// env name and help text, names are unique, and every default parses.
func TestSettingsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range fields() {
		for _, name := range []string{f.env, "--" + f.flag, f.key} {
			if name != "" && name != "--" && seen[name] {
				t.Errorf("duplicate name %s", name)
			}
			seen[name] = true
		}
		if f.env == "" || f.doc == "" {
			t.Errorf("field %d: env %q doc %q, both required", f.index, f.env, f.doc)
		}
		if f.secret == "true" && f.def != "" {
			t.Errorf("%s is a secret and must not have a default", f.env)
		}
	}
}
