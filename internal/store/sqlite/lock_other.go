//go:build !unix

package sqlite

import "errors"

// errLocked is never returned where flock is unavailable; SQLite's own file
// locking is then the only guard against a second process.
var errLocked = errors.New("lock held elsewhere")

type fileLock struct{}

func acquireLock(string) (*fileLock, error) { return &fileLock{}, nil }

func (*fileLock) release() error { return nil }
