//go:build unix

package quota_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

// The environment of the child process of TestMemorySurvivesSIGKILL: the
// test binary serves requests instead of running tests when
// crashChildDB is set.
const (
	crashChildDB    = "QUOTA_TEST_CRASH_DB"
	crashChildToken = "QUOTA_TEST_CRASH_TOKEN"
	crashChildServe = "QUOTA_TEST_CRASH_SERVE"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildDB); path != "" {
		os.Exit(crashChild(path, os.Getenv(crashChildToken), os.Getenv(crashChildServe)))
	}
	os.Exit(m.Run())
}

// crashChild serves n requests of a token from a Memory counter on the
// SQLite file at path, says "served n" on stdout, then waits for stdin to
// close, which it does only if the parent goes away: the parent kills it.
func crashChild(path, tokenID, n string) int {
	serve, err := strconv.Atoi(n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 2
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: path})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	tok, err := st.GetToken(ctx, tokenID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	m := quota.NewMemory(quota.MemoryOptions{Store: st, Toucher: &countToucher{}})
	for i := range serve {
		if err := m.Consume(ctx, tok); err != nil {
			fmt.Fprintf(os.Stderr, "crash child: Consume #%d: %v\n", i+1, err)
			return 1
		}
	}
	fmt.Printf("served %d\n", serve)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestMemorySurvivesSIGKILL serves part of a quota in a child process,
// kills it with SIGKILL mid-block, and serves the rest from a fresh counter
// on the same SQLite file: the durable count covered every request the
// child served, and the two lives together never serve more than
// max_requests.
func TestMemorySurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	const maxRequests, served = 100, 37 // 37 is mid-block: 3 blocks reserved, 11 unserved
	path := testenv.SQLitePath(t)
	st := openSQLiteAt(t, path)
	tok := tokenMaker(t, st).New(t, maxRequests, 0)
	if err := st.Close(); err != nil { // the child takes the file's lock
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashChildDB+"="+path, crashChildToken+"="+tok.ID, crashChildServe+"="+strconv.Itoa(served))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		_ = stdin.Close()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if want := fmt.Sprintf("served %d\n", served); line != want {
		_ = cmd.Wait()
		waited = true
		t.Fatalf("child said %q (%v), want %q; stderr:\n%s", line, err, want, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	waited = true
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child ended with %v, want killed", err)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL", err)
	}

	st = openSQLiteAt(t, path)
	t.Cleanup(func() { _ = st.Close() })
	durable := requestCount(t, st, tok.ID)
	if durable != 3*block {
		t.Fatalf("request_count %d after the child served %d and was killed, want the %d of the three blocks it reserved", durable, served, 3*block)
	}
	rest := consumeN(t, newMemory(t, st, &countToucher{}), tok, 2*maxRequests)
	if served+rest > maxRequests || rest != maxRequests-durable {
		t.Fatalf("%d served after the kill on top of %d, want %d (never more than max_requests %d)", rest, served, maxRequests-durable, maxRequests)
	}
	t.Logf("served %d + %d of %d across SIGKILL (%d lost with the child's block)", served, rest, maxRequests, durable-served)
}
