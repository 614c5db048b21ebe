//go:build unix

package sqlite

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

// A copy of the lock's descriptor (what a child process being started
// holds until it execs) must not keep the lock once it is released.
func TestReleaseWhileADescriptorCopyLives(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.lock")
	l, err := acquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acquireLock(path); !errors.Is(err, errLocked) {
		t.Fatalf("second acquire while held: %v, want errLocked", err)
	}
	dup, err := syscall.Dup(int(l.f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dup)
	if err := l.release(); err != nil {
		t.Fatal(err)
	}
	again, err := acquireLock(path)
	if err != nil {
		t.Fatalf("acquire after release, with a copy of the old descriptor open: %v", err)
	}
	if err := again.release(); err != nil {
		t.Fatal(err)
	}
}
