// Package binaries builds cmd/proxy and cmd/migrate for the tests and
// tools that run them as processes (the end-to-end tests, the cluster test
// bed, the benchmark), once per process and build mode.
package binaries

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Set is one build of the product's binaries.
type Set struct {
	Proxy   string // cmd/proxy
	Migrate string // cmd/migrate
}

// build is the outcome of one mode's build.
type build struct {
	once sync.Once
	set  Set
	err  error
}

var (
	mu     sync.Mutex
	dir    string              // holds every mode's binaries; created by the first build
	builds = map[bool]*build{} // by race
)

// Prebuilt names the environment variable of a directory holding binaries
// built for this source tree already, as plain/{proxy,migrate} and
// race/{proxy,migrate}: .ci/test builds them once for every test package.
const Prebuilt = "TEST_BINARIES"

// Build returns cmd/proxy and cmd/migrate compiled with the race detector
// when race is set, and otherwise as `make build` compiles them (static,
// CGO_ENABLED=0, -trimpath). When $TEST_BINARIES is set it returns the
// binaries there, checking that they exist. Otherwise the first call for a
// mode builds both with one `go build` into a temporary directory; later
// calls in the process, concurrent ones included, wait for it and return
// the same Set or the same error. It must run inside this module's source
// tree (a test's working directory is). Remove deletes the binaries it
// built.
func Build(ctx context.Context, race bool) (Set, error) {
	if dir := os.Getenv(Prebuilt); dir != "" {
		return prebuilt(dir, race)
	}
	mu.Lock()
	b, ok := builds[race]
	if !ok {
		b = &build{}
		builds[race] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.set, b.err = compile(ctx, race) })
	return b.set, b.err
}

// ForTest is Build for a test: a failed build fails t.
func ForTest(t testing.TB, race bool) Set {
	t.Helper()
	s, err := Build(context.Background(), race)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Remove deletes every binary Build wrote. Call it once the binaries are no
// longer run, at the end of TestMain or of a tool; Build must not be called
// afterwards.
func Remove() error {
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		return nil
	}
	return os.RemoveAll(dir)
}

// tempDir returns the directory of every mode's binaries, creating it on
// first use.
func tempDir() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		d, err := os.MkdirTemp("", "llmproxy-bin-")
		if err != nil {
			return "", err
		}
		dir = d
	}
	return dir, nil
}

func prebuilt(dir string, race bool) (Set, error) {
	set := inDir(filepath.Join(dir, modeName(race)))
	for _, path := range []string{set.Proxy, set.Migrate} {
		if _, err := os.Stat(path); err != nil {
			return Set{}, fmt.Errorf("%s: %w", Prebuilt, err)
		}
	}
	return set, nil
}

func modeName(race bool) string {
	if race {
		return "race"
	}
	return "plain"
}

func inDir(dir string) Set {
	return Set{Proxy: filepath.Join(dir, "proxy"), Migrate: filepath.Join(dir, "migrate")}
}

func compile(ctx context.Context, race bool) (Set, error) {
	root, err := tempDir()
	if err != nil {
		return Set{}, fmt.Errorf("build proxy and migrate: %w", err)
	}
	mode, flags, cgo := modeName(race), []string{"-trimpath"}, "CGO_ENABLED=0"
	if race {
		// As .ci/test builds them: SQLite is left uninstrumented.
		flags, cgo = []string{"-race", "-trimpath", "-gcflags=modernc.org/...=-race=false"}, "CGO_ENABLED=1" // the race detector needs cgo
	}
	out := filepath.Join(root, mode)
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", out+string(filepath.Separator),
		"github.com/llmproxy/llm-proxy/cmd/proxy", "github.com/llmproxy/llm-proxy/cmd/migrate")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), cgo)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return Set{}, fmt.Errorf("go build proxy and migrate (%s): %w\n%s", mode, err, msg)
	}
	return inDir(out), nil
}
