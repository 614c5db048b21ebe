package ratelimit

import (
	"context"
	"strconv"
	"testing"
	"testing/synctest"
	"time"
)

func TestGCRA(t *testing.T) {
	t.Parallel()
	const s = int64(time.Second)
	tests := []struct {
		name              string
		tat, now          int64
		limit, cost       int64
		wantTAT, wantWait int64
	}{
		{"fresh bucket", 0, 100 * s, 60, 1, 101 * s, 0},
		{"fills exactly", 100 * s, 100 * s, 60, 60, 160 * s, 0},
		{"one over", 160 * s, 100 * s, 60, 1, 161 * s, 1 * s},
		{"partly refilled", 150 * s, 100 * s, 60, 10, 160 * s, 0},
		{"cost zero at the brim", 160 * s, 100 * s, 60, 0, 160 * s, 0},
		{"cost zero in debt", 170 * s, 100 * s, 60, 0, 170 * s, 10 * s},
		{"above limit, full bucket", 50 * s, 100 * s, 60, 90, 190 * s, 0},
		{"above limit, not full", 103 * s, 100 * s, 60, 90, 193 * s, 3 * s},
		{"tolerance from truncated interval", 0, 0, 7, 7, 7 * (int64(time.Minute) / 7), 0},
		{"tolerance from truncated interval, one over", int64(time.Minute) / 7, 0, 7, 7, 8 * (int64(time.Minute) / 7), int64(time.Minute) / 7},
		{"limit above nanoseconds per minute", 0, 0, 1 << 40, 5, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotTAT, gotWait := gcra(tt.tat, tt.now, tt.limit, tt.cost)
			if gotTAT != tt.wantTAT || gotWait != tt.wantWait {
				t.Fatalf("gcra(%d, %d, %d, %d) = (%d, %d), want (%d, %d)",
					tt.tat, tt.now, tt.limit, tt.cost, gotTAT, gotWait, tt.wantTAT, tt.wantWait)
			}
		})
	}
}

func TestRoundUp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		wait int64
		want time.Duration
	}{
		{1, time.Millisecond},
		{int64(time.Millisecond), time.Millisecond},
		{int64(time.Millisecond) + 1, 2 * time.Millisecond},
		{int64(1500 * time.Microsecond), 2 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := roundUp(tt.wait); got != tt.want {
			t.Errorf("roundUp(%d) = %v, want %v", tt.wait, got, tt.want)
		}
	}
}

func (m *Memory) size() int {
	n := 0
	for i := range m.shards {
		m.shards[i].mu.Lock()
		n += len(m.shards[i].tats)
		m.shards[i].mu.Unlock()
	}
	return n
}

// TestMemorySweepsIdleKeys checks that buckets which refilled are dropped as
// new keys arrive, so memory follows the recently active keys only. It runs
// in a synctest bubble: a round's buckets are idle once the test's clock
// has moved past their refill.
func TestMemorySweepsIdleKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory()
		ctx := context.Background()
		// Limit 6e9/min: one unit refills in 10ns.
		const limit = 6_000_000_000
		for round := range 20 {
			for i := range 5000 {
				k := "k:" + strconv.Itoa(round) + ":" + strconv.Itoa(i)
				if d, err := m.Allow(ctx, Request{Key: k, Limit: limit, Cost: 1}); err != nil || !d.Allowed {
					t.Fatalf("Allow(%s) = %+v, %v", k, d, err)
				}
			}
			time.Sleep(time.Microsecond) // bubble time: every bucket so far refilled
		}
		// 100,000 keys were used; only the last rounds' may remain (a shard
		// holds at most twice its live keys, and at least minSweep).
		if n := m.size(); n > 2*5000+shardCount*minSweep {
			t.Fatalf("%d buckets held after 100000 idle keys, want them swept", n)
		}
	})
}

// TestMemoryDropsFullBuckets checks that a bucket given back to full holds no
// memory.
func TestMemoryDropsFullBuckets(t *testing.T) {
	t.Parallel()
	m := NewMemory()
	ctx := context.Background()
	if d, err := m.Allow(ctx, Request{Key: "a", Limit: 10, Cost: 3}); err != nil || !d.Allowed {
		t.Fatalf("Allow = %+v, %v", d, err)
	}
	if n := m.size(); n != 1 {
		t.Fatalf("%d buckets held, want 1", n)
	}
	if err := m.Adjust(ctx, "a", 10, -3); err != nil {
		t.Fatal(err)
	}
	if n := m.size(); n != 0 {
		t.Fatalf("%d buckets held after giving everything back, want 0", n)
	}
}

func TestMemoryAllowDoesNotAllocate(t *testing.T) {
	m := NewMemory()
	ctx := context.Background()
	reqs := []Request{
		{Key: "tok:1:rpm", Limit: 1 << 40, Cost: 1},
		{Key: "tok:1:tpm", Limit: 1 << 40, Cost: 100},
		{Key: "prj:1:rpm", Limit: 1 << 40, Cost: 1},
		{Key: "prj:1:tpm", Limit: 0, Cost: 100},
	}
	if _, err := m.Allow(ctx, reqs...); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := m.Allow(ctx, reqs...); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Allow allocates %v times per call, want 0", allocs)
	}
}
