package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

const (
	shardCount = 64
	// minSweep is the map size below which a shard never sweeps.
	minSweep = 64
	// inlineReqs is how many requests one Allow handles without allocating.
	inlineReqs = 8
)

// shard holds the buckets of the keys hashing to it: key → theoretical
// arrival time in nanoseconds since Memory.start. A missing key is a full
// bucket, so an entry whose time has passed carries no information and may
// be dropped.
type shard struct {
	mu sync.Mutex
	// tats is rebuilt, not just pruned, by sweep so its memory shrinks too.
	tats map[string]int64
	// sweepAt is the map size at which the next insert sweeps: twice the
	// live size after the last sweep, so sweeping costs O(1) per insert and
	// a shard never holds more than twice its recently active keys.
	sweepAt int
	// Padding keeps hot shards on separate cache lines.
	_ [40]byte
}

// Memory is the in-process Limiter: one GCRA bucket per key, in sharded maps
// for low lock contention. Idle keys are dropped lazily as their shard
// grows, so memory stays bounded without a background goroutine. The zero
// value is not usable; call NewMemory. Memory is safe for concurrent use.
type Memory struct {
	seed   maphash.Seed
	start  time.Time
	shards [shardCount]shard
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an empty in-process limiter.
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed(), start: time.Now()}
	for i := range m.shards {
		m.shards[i].tats = make(map[string]int64)
		m.shards[i].sweepAt = minSweep
	}
	return m
}

// now reads the monotonic clock.
func (m *Memory) now() int64 {
	return int64(time.Since(m.start))
}

func (m *Memory) shardOf(key string) uint8 {
	return uint8(maphash.String(m.seed, key) % shardCount)
}

// Allow implements Limiter. It never fails except on a negative Cost.
func (m *Memory) Allow(_ context.Context, reqs ...Request) (Decision, error) {
	var (
		tatBuf   [inlineReqs]int64
		shardBuf [inlineReqs]uint8
	)
	tats := tatBuf[:0]
	locked := shardBuf[:0]
	for _, r := range reqs {
		if r.Cost < 0 {
			return Decision{}, fmt.Errorf("allow %s: negative cost %d", r.Key, r.Cost)
		}
		if r.Limit > 0 {
			locked = insertSorted(locked, m.shardOf(r.Key))
		}
	}
	for _, s := range locked {
		m.shards[s].mu.Lock()
	}
	defer func() {
		for _, s := range locked {
			m.shards[s].mu.Unlock()
		}
	}()

	now := m.now()
	var (
		worst    int64
		worstKey string
	)
	for i, r := range reqs {
		tats = append(tats, 0)
		if r.Limit <= 0 {
			continue
		}
		tat := m.pending(reqs[:i], tats, r.Key)
		newTAT, wait := gcra(tat, now, r.Limit, r.Cost)
		tats[i] = newTAT
		if wait > worst {
			worst, worstKey = wait, r.Key
		}
	}
	if worst > 0 {
		return Decision{RetryAfter: roundUp(worst), Key: worstKey}, nil
	}
	for i, r := range reqs {
		if r.Limit > 0 {
			m.shards[m.shardOf(r.Key)].store(r.Key, tats[i], now)
		}
	}
	return Decision{Allowed: true}, nil
}

// pending returns key's bucket as left by the earlier requests of the same
// Allow call (so a key named twice is charged twice), else as stored. The
// caller holds the key's shard lock.
func (m *Memory) pending(earlier []Request, tats []int64, key string) int64 {
	for j := len(earlier) - 1; j >= 0; j-- {
		if earlier[j].Limit > 0 && earlier[j].Key == key {
			return tats[j]
		}
	}
	return m.shards[m.shardOf(key)].tats[key]
}

// Adjust implements Limiter. It never fails.
func (m *Memory) Adjust(_ context.Context, key string, limit int64, delta int64) error {
	if limit <= 0 || delta == 0 {
		return nil
	}
	sh := &m.shards[m.shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := m.now()
	tat := max(sh.tats[key], now) + delta*interval(limit)
	sh.store(key, tat, now)
	return nil
}

// store records key's new tat; a tat not after now is a full bucket and is
// deleted. The caller holds s.mu.
func (s *shard) store(key string, tat, now int64) {
	if tat <= now {
		delete(s.tats, key)
		return
	}
	if _, ok := s.tats[key]; !ok && len(s.tats) >= s.sweepAt {
		s.sweep(now)
	}
	s.tats[key] = tat
}

// sweep drops the full buckets and moves the rest to a right-sized map. The
// caller holds s.mu.
func (s *shard) sweep(now int64) {
	live := 0
	for _, tat := range s.tats {
		if tat > now {
			live++
		}
	}
	fresh := make(map[string]int64, live)
	for k, tat := range s.tats {
		if tat > now {
			fresh[k] = tat
		}
	}
	s.tats = fresh
	s.sweepAt = max(2*live, minSweep)
}

// insertSorted adds v to the sorted set s; shards are locked in ascending
// order so concurrent multi-key calls cannot deadlock.
func insertSorted(s []uint8, v uint8) []uint8 {
	i := 0
	for i < len(s) && s[i] < v {
		i++
	}
	if i < len(s) && s[i] == v {
		return s
	}
	s = append(s, 0)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}
