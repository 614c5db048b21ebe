package telemetry

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRequestLabelsAreBounded(t *testing.T) {
	m := NewMetrics()
	for range 3 {
		m.ObserveRequest("/v1/*", "POST", 200, time.Millisecond)
	}
	for i := range 50 {
		m.ObserveRequest("/v1/*", fmt.Sprintf("X-%d", i), 405, time.Millisecond)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("/v1/*", "POST", "200")); got != 3 {
		t.Errorf("POST 200 counted %v times, want 3", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("/v1/*", "other", "405")); got != 50 {
		t.Errorf("unknown methods counted %v times under \"other\", want 50", got)
	}
	if n := testutil.CollectAndCount(m.requests); n != 2 {
		t.Errorf("%d request series, want 2", n)
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("%d duration series, want 2", n)
	}
}

func TestModelLabelsAreBounded(t *testing.T) {
	m := NewMetrics()
	for i := range maxModels + 100 {
		m.AddTokens(fmt.Sprintf("model-%d", i), "p", 1, 0)
	}
	m.AddTokens("model-0", "p", 1, 0)
	if n := testutil.CollectAndCount(m.tokens); n != maxModels+1 {
		t.Errorf("%d token series, want %d models plus \"other\"", n, maxModels)
	}
	if got := testutil.ToFloat64(m.tokens.WithLabelValues("other", "p", "prompt")); got != 100 {
		t.Errorf("\"other\" counted %v prompt tokens, want 100", got)
	}
	if got := testutil.ToFloat64(m.tokens.WithLabelValues("model-0", "p", "prompt")); got != 2 {
		t.Errorf("model-0 counted %v prompt tokens, want 2", got)
	}
}
