package memory

import "sync"

// boundedSet is a set of at most max keys, emptied when full.
type boundedSet[K comparable] struct {
	mu  sync.Mutex
	m   map[K]struct{}
	max int
}

func newBoundedSet[K comparable](max int) boundedSet[K] {
	return boundedSet[K]{m: map[K]struct{}{}, max: max}
}

func (s *boundedSet[K]) has(k K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[k]
	return ok
}

func (s *boundedSet[K]) add(k K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		clear(s.m)
	}
	s.m[k] = struct{}{}
}

// boundedMap is a map of at most max entries, emptied when full.
type boundedMap[K comparable, V any] struct {
	mu  sync.Mutex
	m   map[K]V
	max int
}

func newBoundedMap[K comparable, V any](max int) boundedMap[K, V] {
	return boundedMap[K, V]{m: map[K]V{}, max: max}
}

func (b *boundedMap[K, V]) get(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	return v, ok
}

func (b *boundedMap[K, V]) put(k K, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= b.max {
		clear(b.m)
	}
	b.m[k] = v
}
