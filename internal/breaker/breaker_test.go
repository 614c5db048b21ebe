package breaker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/breaker"
	"github.com/llmproxy/llm-proxy/internal/testkit/testclock"
)

var errDown = errors.New("connection refused")

type fixture struct {
	b       *breaker.Breaker
	clock   *testclock.Clock
	changes []bool
	calls   int
}

func newFixture(t *testing.T, opts breaker.Options) *fixture {
	t.Helper()
	f := &fixture{clock: testclock.New(time.Unix(1_700_000_000, 0))}
	opts.Now = f.clock.Now
	opts.OnStateChange = func(open bool) { f.changes = append(f.changes, open) }
	f.b = breaker.New(opts)
	return f
}

// do calls Do with a fn returning err and reports Do's error.
func (f *fixture) do(err error) error {
	return f.b.Do(context.Background(), func(context.Context) error {
		f.calls++
		return err
	})
}

func (f *fixture) mustCall(t *testing.T, err error) {
	t.Helper()
	before := f.calls
	if got := f.do(err); got != err { // Do returns fn's error unchanged
		t.Fatalf("Do = %v, want fn's error %v", got, err)
	}
	if f.calls != before+1 {
		t.Fatal("fn was not called")
	}
}

func (f *fixture) mustReject(t *testing.T) {
	t.Helper()
	before := f.calls
	if got := f.do(nil); !errors.Is(got, breaker.ErrOpen) {
		t.Fatalf("Do = %v, want ErrOpen", got)
	}
	if f.calls != before {
		t.Fatal("fn was called while the breaker is open")
	}
}

func (f *fixture) wantChanges(t *testing.T, want ...bool) {
	t.Helper()
	if len(f.changes) != len(want) {
		t.Fatalf("state changes %v, want %v", f.changes, want)
	}
	for i := range want {
		if f.changes[i] != want[i] {
			t.Fatalf("state changes %v, want %v", f.changes, want)
		}
	}
}

func TestOpensAfterConsecutiveFailures(t *testing.T) {
	f := newFixture(t, breaker.Options{Failures: 3, Cooldown: time.Second})
	f.mustCall(t, errDown)
	f.mustCall(t, errDown)
	if f.b.Open() {
		t.Fatal("open after 2 of 3 failures")
	}
	f.mustCall(t, errDown)
	if !f.b.Open() {
		t.Fatal("closed after 3 consecutive failures")
	}
	f.wantChanges(t, true)
	f.mustReject(t)
	f.clock.Advance(999 * time.Millisecond)
	f.mustReject(t)
}

func TestSuccessResetsTheRun(t *testing.T) {
	f := newFixture(t, breaker.Options{Failures: 3})
	for range 5 {
		f.mustCall(t, errDown)
		f.mustCall(t, errDown)
		f.mustCall(t, nil)
	}
	if f.b.Open() {
		t.Fatal("open although failures were never 3 in a row")
	}
	f.wantChanges(t)
}

func TestHalfOpenProbe(t *testing.T) {
	tests := []struct {
		name      string
		probeErr  error
		wantOpen  bool
		wantProbe bool // whether the next caller probes right away
	}{
		{"success closes", nil, false, true},
		{"failure reopens for a cooldown", errDown, true, false},
		{"caller gave up: stays half-open", context.Canceled, true, true},
		{"error that is not a failure closes", errNotFailure, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, breaker.Options{
				Failures:  1,
				Cooldown:  time.Second,
				IsFailure: func(err error) bool { return !errors.Is(err, errNotFailure) && !errors.Is(err, context.Canceled) },
			})
			f.mustCall(t, errDown)
			f.clock.Advance(time.Second)
			f.mustCall(t, tt.probeErr)
			if f.b.Open() != tt.wantOpen {
				t.Fatalf("Open() = %v after the probe, want %v", f.b.Open(), tt.wantOpen)
			}
			if tt.wantProbe {
				f.mustCall(t, nil)
			} else {
				f.mustReject(t)
				f.clock.Advance(time.Second)
				f.mustCall(t, nil)
			}
			if f.b.Open() {
				t.Fatal("open after a successful call")
			}
			f.wantChanges(t, true, false)
		})
	}
}

var errNotFailure = errors.New("not found")

func TestIsFailureClassifier(t *testing.T) {
	f := newFixture(t, breaker.Options{
		Failures:  2,
		IsFailure: func(err error) bool { return !errors.Is(err, errNotFailure) },
	})
	for range 10 {
		f.mustCall(t, errNotFailure)
	}
	if f.b.Open() {
		t.Fatal("errors the classifier excludes opened the breaker")
	}
	// They also break a run of failures.
	f.mustCall(t, errDown)
	f.mustCall(t, errNotFailure)
	f.mustCall(t, errDown)
	if f.b.Open() {
		t.Fatal("non-consecutive failures opened the breaker")
	}
	f.mustCall(t, errDown)
	if !f.b.Open() {
		t.Fatal("2 consecutive failures did not open the breaker")
	}
}

func TestDefaultsIgnoreCanceled(t *testing.T) {
	f := newFixture(t, breaker.Options{})
	for range 2 * breaker.DefaultFailures {
		f.mustCall(t, context.Canceled)
	}
	if f.b.Open() {
		t.Fatal("context.Canceled counted as a failure")
	}
	for range breaker.DefaultFailures - 1 {
		f.mustCall(t, context.DeadlineExceeded)
	}
	if f.b.Open() {
		t.Fatal("open before DefaultFailures failures")
	}
	f.mustCall(t, context.DeadlineExceeded)
	f.mustReject(t)
	f.clock.Advance(breaker.DefaultCooldown - time.Nanosecond)
	f.mustReject(t)
	f.clock.Advance(time.Nanosecond)
	f.mustCall(t, nil)
	f.wantChanges(t, true, false)
}

// TestOneProbeAtATime checks that while a probe is in flight every other
// caller is rejected, and that concurrent failures open the breaker once.
func TestOneProbeAtATime(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	var opened, closed atomic.Int64
	b := breaker.New(breaker.Options{
		Failures: 4,
		Cooldown: time.Second,
		Now:      c.Now,
		OnStateChange: func(open bool) {
			if open {
				opened.Add(1)
			} else {
				closed.Add(1)
			}
		},
	})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			_ = b.Do(context.Background(), func(context.Context) error { return errDown })
		})
	}
	wg.Wait()
	if opened.Load() != 1 {
		t.Fatalf("OnStateChange(true) called %d times, want 1", opened.Load())
	}
	c.Advance(time.Second)

	release := make(chan struct{})
	inProbe := make(chan struct{})
	probeDone := make(chan error, 1)
	go func() {
		probeDone <- b.Do(context.Background(), func(context.Context) error {
			close(inProbe)
			<-release
			return nil
		})
	}()
	<-inProbe
	var called atomic.Int64
	for range 16 {
		wg.Go(func() {
			err := b.Do(context.Background(), func(context.Context) error {
				called.Add(1)
				return nil
			})
			if !errors.Is(err, breaker.ErrOpen) {
				t.Errorf("Do during the probe = %v, want ErrOpen", err)
			}
		})
	}
	wg.Wait()
	close(release)
	if err := <-probeDone; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if called.Load() != 0 {
		t.Fatalf("%d calls went through during the probe, want 0", called.Load())
	}
	if b.Open() || closed.Load() != 1 {
		t.Fatalf("Open() = %v, closes = %d after a successful probe", b.Open(), closed.Load())
	}
}

func BenchmarkDoClosed(b *testing.B) {
	br := breaker.New(breaker.Options{})
	ctx := context.Background()
	fn := func(context.Context) error { return nil }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := br.Do(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}
