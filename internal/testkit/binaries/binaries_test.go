package binaries

import (
	"context"
	"os"
	"sync"
	"testing"
)

// TestBuildOncePerMode builds the plain binaries from two goroutines at
// once: both get the same executables, and Remove deletes them.
func TestBuildOncePerMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	var (
		wg   sync.WaitGroup
		sets [2]Set
		errs [2]error
	)
	for i := range sets {
		wg.Go(func() { sets[i], errs[i] = Build(context.Background(), false) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if sets[0] != sets[1] {
		t.Fatalf("two builds in one process: %+v and %+v", sets[0], sets[1])
	}
	for _, path := range []string{sets[0].Proxy, sets[0].Migrate} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", path, fi.Mode())
		}
	}
	if err := Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sets[0].Proxy); !os.IsNotExist(err) {
		t.Errorf("after Remove, stat %s: %v", sets[0].Proxy, err)
	}
}
