package storetest

import (
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func activeBlocks(t *testing.T, s store.Store, now time.Time, limit int) []store.AuthBlock {
	t.Helper()
	got, err := s.ActiveAuthBlocks(t.Context(), now, limit)
	if err != nil {
		t.Fatalf("ActiveAuthBlocks: %v", err)
	}
	for i := range got {
		requireUTC(t, &got[i])
	}
	return got
}

func recordBlocks(t *testing.T, s store.Store, blocks ...store.AuthBlock) {
	t.Helper()
	if err := s.RecordAuthBlocks(t.Context(), blocks); err != nil {
		t.Fatalf("RecordAuthBlocks: %v", err)
	}
}

func testAuthBlockRoundTrip(t *testing.T, s store.Store) {
	now := base()
	a := store.AuthBlock{Identifier: "192.0.2.1", FailedAttempts: 20, LastAttemptAt: now,
		BlockedUntil: now.Add(30 * time.Second)}
	b := store.AuthBlock{Identifier: "2001:db8::/64", FailedAttempts: 21, LastAttemptAt: now.Add(-time.Second),
		BlockedUntil: now.Add(50 * time.Second)}
	c := store.AuthBlock{Identifier: "192.0.2.3", FailedAttempts: 22, LastAttemptAt: now.Add(-time.Second),
		BlockedUntil: now.Add(50 * time.Second)}
	over := store.AuthBlock{Identifier: "192.0.2.9", FailedAttempts: 23, LastAttemptAt: now.Add(-time.Minute),
		BlockedUntil: now} // ends exactly at now: no longer active
	recordBlocks(t, s)
	recordBlocks(t, s, a, b, c, over)

	utc := func(x store.AuthBlock) store.AuthBlock {
		x.LastAttemptAt, x.BlockedUntil = x.LastAttemptAt.UTC(), x.BlockedUntil.UTC()
		return x
	}
	// Latest end first; equal ends by identifier.
	diff(t, "active blocks", []store.AuthBlock{utc(c), utc(b), utc(a)}, activeBlocks(t, s, now, 10))
	diff(t, "active blocks, limit 2", []store.AuthBlock{utc(c), utc(b)}, activeBlocks(t, s, now, 2))
	diff(t, "blocks active later", []store.AuthBlock{utc(c), utc(b)}, activeBlocks(t, s, now.Add(30*time.Second), 10))
	if got := activeBlocks(t, s, now.Add(time.Hour), 10); len(got) != 0 {
		t.Errorf("ActiveAuthBlocks an hour later = %v, want none", got)
	}
	if _, err := s.ActiveAuthBlocks(t.Context(), now, 0); err == nil {
		t.Error("ActiveAuthBlocks with limit 0: no error")
	}
}

func testAuthBlockMerge(t *testing.T, s store.Store) {
	now := base().UTC()
	const ip = "198.51.100.7"
	block := func(attempts int, last, until time.Duration) store.AuthBlock {
		return store.AuthBlock{Identifier: ip, FailedAttempts: attempts, LastAttemptAt: now.Add(last),
			BlockedUntil: now.Add(until)}
	}
	steps := []struct {
		name   string
		record []store.AuthBlock
		want   store.AuthBlock
	}{
		{"first block", []store.AuthBlock{block(25, 0, time.Minute)}, block(25, 0, time.Minute)},
		{"same end, fewer attempts, later attempt", []store.AuthBlock{block(20, time.Second, time.Minute)},
			block(25, time.Second, time.Minute)},
		{"same end, more attempts", []store.AuthBlock{block(30, -time.Second, time.Minute)},
			block(30, time.Second, time.Minute)},
		{"earlier end changes nothing but the last attempt",
			[]store.AuthBlock{block(99, 2*time.Second, 30*time.Second)}, block(30, 2*time.Second, time.Minute)},
		{"later end replaces the count", []store.AuthBlock{block(20, 90*time.Second, 2*time.Minute)},
			block(20, 90*time.Second, 2*time.Minute)},
		{"one batch naming the identifier twice",
			[]store.AuthBlock{block(40, 3*time.Minute, 4*time.Minute), block(21, 150*time.Second, 3*time.Minute)},
			block(40, 3*time.Minute, 4*time.Minute)},
	}
	for _, step := range steps {
		recordBlocks(t, s, step.record...)
		got := activeBlocks(t, s, now, 10)
		diff(t, step.name, []store.AuthBlock{step.want}, got)
	}
}
