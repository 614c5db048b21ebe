package retention

import (
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// TestSweepDeletesStaleReplicas: the rows of replicas not seen for a day
// go, whatever the retention settings; the others stay.
func TestSweepDeletesStaleReplicas(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.open(t)
			for id, seen := range map[string]time.Time{"crashed": now.Add(-day - time.Minute), "live": now.Add(-10 * time.Second)} {
				r := &store.Replica{ID: id, Hostname: id, StartedAt: seen.Add(-time.Hour), LastSeenAt: seen}
				if err := s.UpsertReplica(t.Context(), r); err != nil {
					t.Fatal(err)
				}
			}
			res, ran, err := New(s, Options{Now: func() time.Time { return now }}).SweepOnce(t.Context())
			if err != nil || !ran {
				t.Fatalf("SweepOnce = (%+v, %t, %v)", res, ran, err)
			}
			if want := (Result{Replicas: 1}); rowsOf(res) != want {
				t.Errorf("SweepOnce deleted %+v, want %+v", res, want)
			}
			left, err := s.ListReplicas(t.Context(), 10)
			if err != nil || len(left) != 1 || left[0].ID != "live" {
				t.Errorf("replicas left: %v, %v; want the live one", left, err)
			}
		})
	}
}
