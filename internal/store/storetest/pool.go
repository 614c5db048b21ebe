package storetest

import (
	"testing"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func testPingStats(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	p := mustCreateProject(t, s, newProject("p"))
	if _, err := s.GetProject(t.Context(), p.ID); err != nil {
		t.Fatalf("GetProject: %v", err)
	}
	st := s.Stats()
	if st.MaxConns <= 0 {
		t.Errorf("Stats().MaxConns = %d, want > 0", st.MaxConns)
	}
	if st.TotalConns < 0 || st.IdleConns < 0 || st.InUseConns < 0 || st.AcquireCount < 0 ||
		st.AcquireWait < 0 || st.ExhaustedErrs < 0 || st.BusyWaits < 0 {
		t.Errorf("Stats() has a negative figure: %+v", st)
	}
	if st.TotalConns > st.MaxConns || st.InUseConns > st.TotalConns {
		t.Errorf("Stats() = %+v: want InUseConns <= TotalConns <= MaxConns", st)
	}
}
