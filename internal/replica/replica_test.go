package replica

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/syncbuf"
)

// fakeStore records heartbeats and fails them while fail is set.
type fakeStore struct {
	mu      sync.Mutex
	fail    bool
	beats   []store.Replica
	deleted []string
}

func (f *fakeStore) UpsertReplica(_ context.Context, r *store.Replica) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("database away")
	}
	f.beats = append(f.beats, *r)
	return nil
}

func (f *fakeStore) DeleteReplica(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, id)
	return nil
}

func (f *fakeStore) setFail(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = v
}

func (f *fakeStore) snapshot() ([]store.Replica, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Replica(nil), f.beats...), append([]string(nil), f.deleted...)
}

// TestHeartbeat: a beat at start and every Interval, each with the time
// of the beat; the row is deleted when the context ends.
func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{}
		start := time.Now()
		self := store.Replica{ID: "id-1", Hostname: "host", Version: "v1", StartedAt: start}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- New(st, self, nil).Run(ctx) }()

		synctest.Wait()
		if beats, _ := st.snapshot(); len(beats) != 1 || !beats[0].LastSeenAt.Equal(start) {
			t.Fatalf("beats at start: %+v, want one at %v", beats, start)
		}
		time.Sleep(3*Interval + time.Second)
		synctest.Wait()
		beats, deleted := st.snapshot()
		if len(beats) != 4 || len(deleted) != 0 {
			t.Fatalf("after 3 intervals: %d beats, deleted %v; want 4 beats, none deleted", len(beats), deleted)
		}
		for i, b := range beats {
			want := self
			want.LastSeenAt = start.Add(time.Duration(i) * Interval)
			if b != want {
				t.Errorf("beat %d = %+v, want %+v", i, b, want)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if _, deleted := st.snapshot(); len(deleted) != 1 || deleted[0] != "id-1" {
			t.Fatalf("deleted %v, want [id-1]", deleted)
		}
	})
}

// TestHeartbeatFailures: failing beats do not stop the loop, are logged at
// most every logEvery, and the recovery is logged once.
func TestHeartbeatFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{fail: true}
		var logs syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- New(st, store.Replica{ID: "id-1"}, logger).Run(ctx) }()

		// 10 minutes of failures: 61 failed beats, 3 warnings (0, 5, 10 min).
		time.Sleep(10*time.Minute + time.Second)
		synctest.Wait()
		if n := strings.Count(logs.String(), "replica heartbeat failed"); n != 3 {
			t.Errorf("%d warnings over 10 minutes of failures, want 3:\n%s", n, logs.String())
		}
		st.setFail(false)
		time.Sleep(2 * Interval)
		synctest.Wait()
		if n := strings.Count(logs.String(), "replica heartbeat recovered"); n != 1 {
			t.Errorf("%d recovery lines, want 1:\n%s", n, logs.String())
		}
		if beats, _ := st.snapshot(); len(beats) != 2 {
			t.Errorf("%d beats after the recovery, want 2", len(beats))
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	})
}
