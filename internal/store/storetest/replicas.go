package storetest

import (
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func utcReplica(r store.Replica) *store.Replica {
	r.StartedAt, r.LastSeenAt = r.StartedAt.UTC(), r.LastSeenAt.UTC()
	return &r
}

// testReplicas covers the replicas table: round trip, an upsert moving
// last_seen_at (forward only, keeping started_at), list order and limit,
// delete, and the purge of replicas not seen for a while.
func testReplicas(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	got, err := s.ListReplicas(ctx, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("ListReplicas on an empty table = %v, %v", got, err)
	}
	a := store.Replica{ID: "a-1", Hostname: "pod-a", Version: "v1.2.3", StartedAt: now.Add(-time.Hour), LastSeenAt: now.Add(-time.Hour)}
	b := store.Replica{ID: "b-1", Hostname: "pod-b", Version: "", StartedAt: now.Add(-2 * time.Hour), LastSeenAt: now.Add(-time.Minute)}
	// c started with b; ties are ordered by id.
	c := store.Replica{ID: "c-1", Hostname: "pod-<c>", Version: "v1.2.4", StartedAt: b.StartedAt, LastSeenAt: now.Add(-3 * 24 * time.Hour)}
	for _, r := range []store.Replica{a, b, c} {
		if err := s.UpsertReplica(ctx, &r); err != nil {
			t.Fatalf("UpsertReplica %s: %v", r.ID, err)
		}
	}
	if got, err = s.ListReplicas(ctx, 10); err != nil {
		t.Fatalf("ListReplicas: %v", err)
	}
	for _, r := range got {
		requireUTC(t, r)
	}
	diff(t, "ListReplicas", []*store.Replica{utcReplica(a), utcReplica(b), utcReplica(c)}, got)
	if got, err = s.ListReplicas(ctx, 2); err != nil || len(got) != 2 || got[1].ID != "b-1" {
		t.Fatalf("ListReplicas limit 2 = %v, %v; want a-1, b-1", got, err)
	}
	if _, err := s.ListReplicas(ctx, 0); err == nil {
		t.Error("ListReplicas limit 0: want an error")
	}

	// A heartbeat moves last_seen_at and may change hostname and version;
	// started_at keeps its first value; an older heartbeat changes nothing
	// of last_seen_at.
	beat := a
	beat.StartedAt = now
	beat.LastSeenAt = now
	beat.Version = "v1.2.5"
	if err := s.UpsertReplica(ctx, &beat); err != nil {
		t.Fatalf("UpsertReplica heartbeat: %v", err)
	}
	late := beat
	late.LastSeenAt = now.Add(-10 * time.Second)
	if err := s.UpsertReplica(ctx, &late); err != nil {
		t.Fatalf("UpsertReplica late heartbeat: %v", err)
	}
	want := a
	want.LastSeenAt, want.Version = now, "v1.2.5"
	if got, err = s.ListReplicas(ctx, 1); err != nil || len(got) != 1 {
		t.Fatalf("ListReplicas after heartbeats = %v, %v", got, err)
	}
	diff(t, "replica after heartbeats", utcReplica(want), got[0])

	// c was last seen three days ago, b a minute ago: a one-day purge
	// takes c alone.
	n, err := s.DeleteReplicasSeenBefore(ctx, now.Add(-24*time.Hour), 10)
	if err != nil || n != 1 {
		t.Fatalf("DeleteReplicasSeenBefore = %d, %v; want 1", n, err)
	}
	if n, err := s.DeleteReplicasSeenBefore(ctx, now.Add(-24*time.Hour), 10); err != nil || n != 0 {
		t.Fatalf("DeleteReplicasSeenBefore again = %d, %v; want 0", n, err)
	}
	if err := s.DeleteReplica(ctx, "b-1"); err != nil {
		t.Fatalf("DeleteReplica: %v", err)
	}
	if err := s.DeleteReplica(ctx, "b-1"); err != nil {
		t.Fatalf("DeleteReplica again: %v", err)
	}
	if got, err = s.ListReplicas(ctx, 10); err != nil {
		t.Fatalf("ListReplicas: %v", err)
	}
	diff(t, "ListReplicas after deletes", []*store.Replica{utcReplica(want)}, got)
}

// testReplicaPurgeBatches deletes stale replicas in batches, earliest seen
// first.
func testReplicaPurgeBatches(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	for i, id := range []string{"r0", "r1", "r2", "r3", "r4"} {
		// r0 was seen last (now), r4 first; r0 and r1 are recent.
		seen := now.Add(-time.Duration(i) * 12 * time.Hour)
		r := &store.Replica{ID: id, Hostname: "h", StartedAt: seen.Add(-time.Minute), LastSeenAt: seen}
		if err := s.UpsertReplica(ctx, r); err != nil {
			t.Fatalf("UpsertReplica: %v", err)
		}
	}
	cutoff := now.Add(-13 * time.Hour)
	if n, err := s.DeleteReplicasSeenBefore(ctx, cutoff, 2); err != nil || n != 2 {
		t.Fatalf("first batch = %d, %v; want 2", n, err)
	}
	got, err := s.ListReplicas(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The two seen earliest (r4, r3) went first.
	diff(t, "replicas after one batch", []string{"r0", "r1", "r2"}, ids(got, func(r *store.Replica) string { return r.ID }))
	if n, err := s.DeleteReplicasSeenBefore(ctx, cutoff, 2); err != nil || n != 1 {
		t.Fatalf("second batch = %d, %v; want 1", n, err)
	}
	if _, err := s.DeleteReplicasSeenBefore(ctx, cutoff, 0); err == nil {
		t.Error("DeleteReplicasSeenBefore limit 0: want an error")
	}
}
