//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// errLocked means another open file description holds the lock.
var errLocked = errors.New("lock held elsewhere")

// fileLock is an exclusive flock on a file next to the database, held for
// the DB's lifetime. flock locks belong to the open file, so a second Open
// conflicts even inside the same process, and the kernel drops the lock
// when the process dies.
type fileLock struct{ f *os.File }

func acquireLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &fileLock{f: f}, nil
}

// release unlocks, then closes the file; the lock file itself stays, since
// removing it would race with a process that just opened it. Closing alone
// is not enough: a child process this process is starting holds a copy of
// every descriptor until it execs, and with it the lock.
func (l *fileLock) release() error {
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN); err != nil {
		l.f.Close()
		return fmt.Errorf("release lock file: %w", err)
	}
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("release lock file: %w", err)
	}
	return nil
}
