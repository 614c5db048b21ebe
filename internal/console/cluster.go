package console

import (
	"context"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// Replicas lists the replicas table; store.Store satisfies it.
type Replicas interface {
	ListReplicas(ctx context.Context, limit int) ([]*store.Replica, error)
}

const (
	// replicaLive is how recently a replica must have been seen to count
	// as live: three heartbeats (every 10 s, package replica).
	replicaLive = 30 * time.Second
	// maxReplicas bounds the replicas listed (the latest started), should
	// a crash loop have left many rows for retention to sweep.
	maxReplicas = 100
)

// clusterGroups are the sections of the cluster page: each shows the
// metric families of /metrics whose names start with one of its prefixes.
var clusterGroups = []struct {
	Title    string
	prefixes []string
}{
	{"Dependencies", []string{"llm_dependency_up"}},
	{"Requests", []string{"http_requests_in_flight", "http_requests_total"}},
	{"Database pool", []string{"database_"}},
	{"Redis", []string{"redis_"}},
	{"Usage and audit batches", []string{"batch_"}},
	{"Response cache", []string{"llm_cache_"}},
}

type clusterPage struct {
	Replica  string
	Schema   string
	Replicas *replicaList // nil without Options.Replicas
	Groups   []metricGroup
	Error    string
}

type replicaList struct {
	Rows  []replicaRow
	More  bool   // more than maxReplicas rows; the latest started are shown
	Error string // the list could not be read
}

type replicaRow struct {
	store.Replica
	ShortID string
	Live    bool // seen within replicaLive
	Self    bool // the replica serving the page
}

type metricGroup struct {
	Title string
	Rows  []metricRow
}

type metricRow struct {
	Name, Labels, Value, Help string
}

func (cn *Console) cluster(c echo.Context) error {
	page := clusterPage{}
	page.Replica, _ = os.Hostname()
	if cn.o.SchemaVersion != nil {
		v, err := cn.o.SchemaVersion(c.Request().Context())
		if err != nil {
			v = "unknown (the database did not answer)"
		}
		page.Schema = v
	}
	if cn.o.Replicas != nil {
		page.Replicas = cn.replicas(c.Request().Context())
	}
	if cn.o.Metrics == nil {
		page.Error = "Metrics are not collected by this process."
		cn.record(c, "cluster.view", auditCall{}, nil)
		return cn.render(c, http.StatusOK, "cluster", page)
	}
	families, err := cn.o.Metrics.Gather()
	cn.record(c, "cluster.view", auditCall{}, err)
	if err != nil {
		return err
	}
	for _, g := range clusterGroups {
		mg := metricGroup{Title: g.Title}
		for _, f := range families {
			if !hasAnyPrefix(f.GetName(), g.prefixes) {
				continue
			}
			for _, m := range f.GetMetric() {
				mg.Rows = append(mg.Rows, metricRow{Name: f.GetName(), Labels: labelText(m), Value: metricValue(f, m), Help: f.GetHelp()})
			}
		}
		sort.SliceStable(mg.Rows, func(i, j int) bool { return mg.Rows[i].Name < mg.Rows[j].Name })
		if len(mg.Rows) > 0 {
			page.Groups = append(page.Groups, mg)
		}
	}
	return cn.render(c, http.StatusOK, "cluster", page)
}

// replicas reads the replicas for the cluster page. A database that does
// not answer leaves a message, not an error page: the page's other figures
// help diagnose just that.
func (cn *Console) replicas(ctx context.Context) *replicaList {
	rs, err := cn.o.Replicas.ListReplicas(ctx, maxReplicas+1)
	if err != nil {
		return &replicaList{Error: "The replicas could not be read (the database did not answer)."}
	}
	l := &replicaList{More: len(rs) > maxReplicas}
	now := cn.o.Now()
	for _, r := range rs[:min(len(rs), maxReplicas)] {
		short := r.ID
		if id := []rune(r.ID); len(id) > 8 {
			short = string(id[:8])
		}
		l.Rows = append(l.Rows, replicaRow{Replica: *r, ShortID: short, Live: now.Sub(r.LastSeenAt) < replicaLive,
			Self: r.ID == cn.o.ReplicaID})
	}
	return l
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func labelText(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ", ")
}

func metricValue(f *dto.MetricFamily, m *dto.Metric) string {
	var v float64
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		v = m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		v = m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		return strconv.FormatUint(h.GetSampleCount(), 10) + " observations"
	default:
		v = m.GetUntyped().GetValue()
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
