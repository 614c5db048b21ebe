package telemetry

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ProjectNames returns the name of every project by ID, for
// llm_project_info. It is called from a /metrics scrape with a context that
// ends within projectInfoTimeout.
type ProjectNames func(ctx context.Context) (map[string]string, error)

const (
	// projectInfoTTL is how long names read for llm_project_info are
	// reused: several Prometheus servers scraping every few seconds cost
	// one project listing per TTL.
	projectInfoTTL = 5 * time.Second
	// projectInfoTimeout bounds a listing, so a database that stops
	// answering delays a scrape by at most this much instead of failing it
	// — the scrape that shows the outage.
	projectInfoTimeout = time.Second
)

var (
	projectInfoDesc = prometheus.NewDesc("llm_project_info",
		"1 for every project: maps the project_id label of other metrics to the project's name.",
		[]string{"project_id", "name"}, nil)
	projectInfoErrorsDesc = prometheus.NewDesc("llm_project_info_errors_total",
		"Project listings for llm_project_info that failed; the names of the last good listing are served meanwhile.",
		nil, nil)
)

// projectInfo is the llm_project_info collector. refresh reads the names at
// most once per ttl, successful or not; when a read fails the names of the
// last successful read are served, as an outage of the database must not
// blank the mapping of the figures it is explaining, and the failure is
// counted in llm_project_info_errors_total (there is no caller to return it
// to). It is safe for concurrent use.
type projectInfo struct {
	names ProjectNames
	ttl   time.Duration

	mu     sync.Mutex
	readAt time.Time // last attempt; zero before the first
	byID   map[string]string
	errors int
}

func newProjectInfo(names ProjectNames, ttl time.Duration) *projectInfo {
	return &projectInfo{names: names, ttl: ttl}
}

// refresh re-reads the names when the last attempt is older than ttl.
// Concurrent scrapes wait for one read rather than each starting their own.
func (p *projectInfo) refresh(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if !p.readAt.IsZero() && now.Sub(p.readAt) < p.ttl {
		return
	}
	p.readAt = now
	ctx, cancel := context.WithTimeout(ctx, projectInfoTimeout)
	defer cancel()
	byID, err := p.names(ctx)
	if err != nil {
		p.errors++
		return
	}
	p.byID = byID
}

func (p *projectInfo) Describe(ch chan<- *prometheus.Desc) {
	ch <- projectInfoDesc
	ch <- projectInfoErrorsDesc
}

// Collect emits the names of the last good listing. A name that is not a
// valid label value (not UTF-8) is left out rather than failing the scrape.
func (p *projectInfo) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, name := range p.byID {
		if m, err := prometheus.NewConstMetric(projectInfoDesc, prometheus.GaugeValue, 1, id, name); err == nil {
			ch <- m
		}
	}
	ch <- prometheus.MustNewConstMetric(projectInfoErrorsDesc, prometheus.CounterValue, float64(p.errors))
}
