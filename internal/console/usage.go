package console

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// usageRanges are the windows the range picker offers, ending now.
var usageRanges = []struct {
	Value, Label string
	span         time.Duration
	bucket       string
}{
	{"24h", "Last 24 hours", 24 * time.Hour, store.BucketHour},
	{"7d", "Last 7 days", 7 * 24 * time.Hour, store.BucketDay},
	{"30d", "Last 30 days", 30 * 24 * time.Hour, store.BucketDay},
	{"90d", "Last 90 days", 90 * 24 * time.Hour, store.BucketDay},
}

var usageSplits = []struct{ Value, Label string }{
	{store.SplitModel, "Model"}, {store.SplitProject, "Project"}, {store.SplitToken, "Token"},
}

// maxSeries is how many keys get their own line; the rest are summed as
// "other".
const maxSeries = 8

type usagePage struct {
	Range, Split, ProjectID string
	Ranges                  any
	Splits                  any
	Projects                []manage.ProjectView
	From, To                time.Time
	ChartJSON               string // chartData, for console.js
	Rows                    []usageRow
	Total                   usageRow
}

// chartData is what console.js hands to uPlot: X are the bucket starts in
// Unix seconds, each series has one value per bucket.
type chartData struct {
	X      []int64       `json:"x"`
	Series []chartSeries `json:"series"`
}

type chartSeries struct {
	Label    string  `json:"label"`
	Requests []int64 `json:"requests"`
	Tokens   []int64 `json:"tokens"`
}

// usageRow is one key's totals over the window.
type usageRow struct {
	Key, Label                                            string
	Requests, PromptTokens, CompletionTokens, TotalTokens int64
}

func (cn *Console) usage(c echo.Context) error {
	page := usagePage{Range: c.QueryParam("range"), Split: c.QueryParam("by"), ProjectID: c.QueryParam("project_id"),
		Ranges: usageRanges, Splits: usageSplits}
	r := usageRanges[1]
	for _, ur := range usageRanges {
		if ur.Value == page.Range {
			r = ur
		}
	}
	page.Range = r.Value
	if !slices.ContainsFunc(usageSplits, func(s struct{ Value, Label string }) bool { return s.Value == page.Split }) {
		page.Split = store.SplitModel
	}
	now := cn.o.Now().UTC()
	step := time.Hour
	page.To = now.Truncate(time.Hour).Add(time.Hour)
	if r.bucket == store.BucketDay {
		step = 24 * time.Hour
		page.To = time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	}
	page.From = page.To.Add(-r.span)

	names, projects, err := cn.projectNames(c)
	if err != nil {
		return err
	}
	page.Projects = projects
	if _, ok := names[page.ProjectID]; !ok {
		page.ProjectID = ""
	}
	points, err := cn.o.Manager.UsageSeries(c.Request().Context(), manage.SeriesQuery{ProjectID: page.ProjectID,
		From: page.From, To: page.To, Bucket: r.bucket, Split: page.Split})
	cn.record(c, "usage.query", auditCall{projectID: page.ProjectID}, err)
	if err != nil {
		return err
	}
	labels, err := cn.keyLabels(c, page.Split, names, points)
	if err != nil {
		return err
	}
	chart, rows, total := buildUsage(points, page.From, page.To, step, labels)
	b, err := json.Marshal(chart)
	if err != nil {
		return err
	}
	page.ChartJSON, page.Rows, page.Total = string(b), rows, total
	return cn.render(c, http.StatusOK, "usage", page)
}

// keyLabels names the split keys of points for people: project names,
// token prefixes and labels (of the newest MaxPageSize tokens; older ones
// show their ID); models are their own names.
func (cn *Console) keyLabels(c echo.Context, split string, projects map[string]string, points []store.UsagePoint) (map[string]string, error) {
	tokens := map[string]string{}
	if split == store.SplitToken && len(points) > 0 {
		l, err := cn.o.Manager.ListTokens(c.Request().Context(), manage.TokenQuery{PageQuery: manage.PageQuery{PageSize: manage.MaxPageSize}})
		if err != nil {
			return nil, err
		}
		for _, t := range l.Items {
			tokens[t.ID] = t.Prefix + "…"
			if t.Label != "" {
				tokens[t.ID] += " " + t.Label
			}
		}
	}
	labels := map[string]string{}
	for _, p := range points {
		switch {
		case p.Key == "" && split == store.SplitProject:
			labels[p.Key] = "(no project)"
		case p.Key == "" && split == store.SplitToken:
			labels[p.Key] = "(no token)"
		case p.Key == "":
			labels[p.Key] = "(none)"
		case split == store.SplitProject:
			labels[p.Key] = cmp.Or(projects[p.Key], p.Key)
		case split == store.SplitToken:
			labels[p.Key] = cmp.Or(tokens[p.Key], p.Key)
		default:
			labels[p.Key] = p.Key
		}
	}
	return labels, nil
}

// buildUsage lays points out on every bucket of [from, to), one series per
// key for the maxSeries busiest keys and one "other" for the rest, and
// totals each key for the table.
func buildUsage(points []store.UsagePoint, from, to time.Time, step time.Duration, labels map[string]string) (chartData, []usageRow, usageRow) {
	n := int(to.Sub(from) / step)
	ch := chartData{Series: []chartSeries{}}
	for i := range n {
		ch.X = append(ch.X, from.Add(time.Duration(i)*step).Unix())
	}
	totals := map[string]*usageRow{}
	total := usageRow{Label: "Total"}
	for _, p := range points {
		r := totals[p.Key]
		if r == nil {
			r = &usageRow{Key: p.Key, Label: labels[p.Key]}
			totals[p.Key] = r
		}
		r.Requests += p.Requests
		r.PromptTokens += p.PromptTokens
		r.CompletionTokens += p.CompletionTokens
		r.TotalTokens += p.TotalTokens
		total.Requests += p.Requests
		total.PromptTokens += p.PromptTokens
		total.CompletionTokens += p.CompletionTokens
		total.TotalTokens += p.TotalTokens
	}
	rows := make([]usageRow, 0, len(totals))
	for _, r := range totals {
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b usageRow) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), cmp.Compare(b.TotalTokens, a.TotalTokens), cmp.Compare(a.Label, b.Label))
	})
	index := map[string]int{}
	for i, r := range rows {
		if i == maxSeries && len(rows) > maxSeries+1 {
			ch.Series = append(ch.Series, chartSeries{Label: "other", Requests: make([]int64, n), Tokens: make([]int64, n)})
			index[r.Key] = i
			continue
		}
		if i > maxSeries && len(rows) > maxSeries+1 {
			index[r.Key] = maxSeries
			continue
		}
		ch.Series = append(ch.Series, chartSeries{Label: r.Label, Requests: make([]int64, n), Tokens: make([]int64, n)})
		index[r.Key] = i
	}
	for _, p := range points {
		b := int(p.Bucket.Sub(from) / step)
		if b < 0 || b >= n {
			continue
		}
		s := &ch.Series[index[p.Key]]
		s.Requests[b] += p.Requests
		s.Tokens[b] += p.TotalTokens
	}
	return ch, rows, total
}

func prettyJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "{}"
	}
	return string(b)
}
