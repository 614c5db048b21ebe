package cache

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Memory is the in-process cache: least recently used entries are evicted
// to keep the total under a byte budget, and entries expire after their
// TTL. It is safe for concurrent use.
type Memory struct {
	max int64
	now func() time.Time

	mu    sync.Mutex
	lru   *list.List // of *memEntry, most recently used first
	items map[string]*list.Element
	bytes int64
}

type memEntry struct {
	key     string
	e       Entry
	size    int64
	expires time.Time
}

var _ Cache = (*Memory)(nil)

// MemoryOptions configure a Memory cache.
type MemoryOptions struct {
	// MaxBytes bounds the total size of the entries (CACHE_MAX_BYTES); an
	// entry larger than it is not stored. Zero or less stores nothing.
	MaxBytes int64
	// Now is the clock (time.Now).
	Now func() time.Time
}

// NewMemory returns an empty in-process cache.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Memory{max: opts.MaxBytes, now: opts.Now, lru: list.New(), items: make(map[string]*list.Element)}
}

// Get returns the entry under key unless it has expired.
func (m *Memory) Get(_ context.Context, key string) (Entry, bool) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[key]
	if !ok {
		return Entry{}, false
	}
	me := el.Value.(*memEntry)
	if !now.Before(me.expires) {
		m.removeLocked(el)
		return Entry{}, false
	}
	m.lru.MoveToFront(el)
	return me.e, true
}

// Set stores e under key for ttl, replacing any entry there and evicting
// the least recently used entries until the total fits MaxBytes. e must not
// be modified afterwards.
func (m *Memory) Set(_ context.Context, key string, e Entry, ttl time.Duration) {
	size := e.size(key)
	if ttl <= 0 || size > m.max {
		return
	}
	me := &memEntry{key: key, e: e, size: size, expires: m.now().Add(ttl)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.items[key]; ok {
		m.removeLocked(el)
	}
	for m.bytes+size > m.max {
		m.removeLocked(m.lru.Back())
	}
	m.items[key] = m.lru.PushFront(me)
	m.bytes += size
}

func (m *Memory) removeLocked(el *list.Element) {
	me := m.lru.Remove(el).(*memEntry)
	delete(m.items, me.key)
	m.bytes -= me.size
}

// MemoryStats are a Memory cache's figures.
type MemoryStats struct {
	Entries int
	Bytes   int64
}

// Stats returns the current figures. Expired entries count until a Get
// finds them or eviction makes room.
func (m *Memory) Stats() MemoryStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MemoryStats{Entries: len(m.items), Bytes: m.bytes}
}
