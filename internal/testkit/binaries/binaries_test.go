package binaries

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestBuildOncePerMode builds the plain binaries from two goroutines at
// once: both get the same executables, and Remove deletes them.
func TestBuildOncePerMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	t.Setenv(Prebuilt, "") // the build itself, even under .ci/test
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

// TestPrebuilt: with $TEST_BINARIES, Build returns the binaries there and
// builds nothing; a directory without them is an error naming the variable.
func TestPrebuilt(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []string{"plain", "race"} {
		if err := os.MkdirAll(filepath.Join(dir, mode), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"proxy", "migrate"} {
			if err := os.WriteFile(filepath.Join(dir, mode, name), []byte("#!/bin/sh\n"), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv(Prebuilt, dir)
	for _, race := range []bool{false, true} {
		set, err := Build(context.Background(), race)
		mode := map[bool]string{false: "plain", true: "race"}[race]
		want := Set{Proxy: filepath.Join(dir, mode, "proxy"), Migrate: filepath.Join(dir, mode, "migrate")}
		if err != nil || set != want {
			t.Errorf("Build(race=%t) = %+v, %v; want %+v", race, set, err, want)
		}
	}
	t.Setenv(Prebuilt, t.TempDir())
	if _, err := Build(context.Background(), false); err == nil || !strings.Contains(err.Error(), Prebuilt) {
		t.Errorf("Build with an empty %s = %v, want an error naming it", Prebuilt, err)
	}
}
