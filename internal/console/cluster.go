package console

import (
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
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
	Replica string
	Schema  string
	Groups  []metricGroup
	Error   string
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
