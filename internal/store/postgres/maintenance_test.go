package postgres

import (
	"testing"
)

// TestTryLockAcrossReplicas checks that the advisory lock excludes another
// pool (another replica), that release hands the lock over, and that no
// pooled session keeps it afterwards.
func TestTryLockAcrossReplicas(t *testing.T) {
	t.Parallel()
	url := migratedURL(t)
	a := open(t, Options{URL: url, PoolSize: 2})
	b := open(t, Options{URL: url, PoolSize: 2})
	ctx := t.Context()

	releaseA, ok, err := a.TryLock(ctx, "retention")
	if err != nil || !ok {
		t.Fatalf("A TryLock = (%t, %v), want the lock", ok, err)
	}
	// Release is idempotent; a held connection would make closing the pool
	// wait forever after a failure.
	t.Cleanup(releaseA)
	if release, ok, err := b.TryLock(ctx, "retention"); err != nil || ok {
		if ok {
			t.Cleanup(release)
		}
		t.Fatalf("B TryLock while A holds it = (%t, %v), want (false, nil)", ok, err)
	}
	releaseA()
	releaseB, ok, err := b.TryLock(ctx, "retention")
	if err != nil || !ok {
		t.Fatalf("B TryLock after A released = (%t, %v), want the lock", ok, err)
	}
	releaseB()
	releaseB()

	var held int
	if err := a.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&held); err != nil {
		t.Fatalf("count advisory locks: %v", err)
	}
	if held != 0 {
		t.Errorf("%d advisory locks still held after every release, want 0", held)
	}
}

// TestTryLockLostWithConnection checks that a holder whose session dies
// loses the lock, and that its release is then harmless.
func TestTryLockLostWithConnection(t *testing.T) {
	t.Parallel()
	url := migratedURL(t)
	a := open(t, Options{URL: url, PoolSize: 2})
	b := open(t, Options{URL: url, PoolSize: 2})
	ctx := t.Context()

	releaseA, ok, err := a.TryLock(ctx, "retention")
	if err != nil || !ok {
		t.Fatalf("A TryLock = (%t, %v), want the lock", ok, err)
	}
	// A held connection would make closing the pool wait forever.
	t.Cleanup(releaseA)
	const holders = `FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`
	// With a timeout, pg_terminate_backend returns true only once the
	// backend has exited, its session locks released; false after 10s.
	var killed int
	if err := b.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(l.pid, 10000)) `+holders).Scan(&killed); err != nil {
		t.Fatalf("terminate the holder: %v", err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d lock holders within 10s, want 1", killed)
	}
	releaseB, ok, err := b.TryLock(ctx, "retention")
	if err != nil || !ok {
		t.Fatalf("B TryLock after A's session died = (%t, %v), want the lock", ok, err)
	}
	t.Cleanup(releaseB)
	releaseA()
	if release, ok, err := a.TryLock(ctx, "retention"); err != nil || ok {
		if ok {
			release()
		}
		t.Errorf("A TryLock while B holds it = (%t, %v), want (false, nil)", ok, err)
	}
	releaseB()
	if err := a.Ping(ctx); err != nil {
		t.Errorf("A Ping after its locked session died: %v", err)
	}
}
