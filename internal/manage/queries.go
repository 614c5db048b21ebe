package manage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// UsageQuery selects usage to aggregate. From and To are RFC 3339 times or
// YYYY-MM-DD dates (UTC); From is inclusive, and a To date includes that
// whole day. GroupBy is "day", "model", "token", "cache" (keys hit and miss) or ""
// (one total).
type UsageQuery struct {
	ProjectID string
	TokenID   string
	From      string
	To        string
	GroupBy   string
}

// UsageReport is aggregated usage and the resolved query window (zero times
// mean unbounded).
type UsageReport struct {
	GroupBy  string
	From, To time.Time
	Totals   []store.UsageTotal
}

// Usage aggregates usage rows. A *ValidationError names a bad parameter.
func (s *Service) Usage(ctx context.Context, q UsageQuery) (*UsageReport, error) {
	switch q.GroupBy {
	case "", store.GroupByDay, store.GroupByModel, store.GroupByToken, store.GroupByCache, store.GroupByPurpose:
	default:
		return nil, invalid("group_by", "must be one of day, model, token, cache, purpose")
	}
	from, to, err := parseWindow(q.From, q.To)
	if err != nil {
		return nil, err
	}
	totals, err := s.store.SumUsage(ctx, store.UsageFilter{ProjectID: q.ProjectID, TokenID: q.TokenID, From: from, To: to, GroupBy: q.GroupBy})
	if err != nil {
		return nil, fmt.Errorf("sum usage: %w", err)
	}
	return &UsageReport{GroupBy: q.GroupBy, From: from, To: to, Totals: totals}, nil
}

// AuditQuery selects audit events, newest first. From and To are as in
// UsageQuery; Outcome is one of the store.Outcome* values or "".
type AuditQuery struct {
	Action    string
	Outcome   string
	ProjectID string
	TokenID   string
	From      string
	To        string
	PageQuery
}

// ListAudit returns one page of audit events.
func (s *Service) ListAudit(ctx context.Context, q AuditQuery) (*List[*store.AuditEvent], error) {
	switch q.Outcome {
	case "", store.OutcomeSuccess, store.OutcomeFailure, store.OutcomeDenied, store.OutcomeError:
	default:
		return nil, invalid("outcome", "must be one of success, failure, denied, error")
	}
	from, to, err := parseWindow(q.From, q.To)
	if err != nil {
		return nil, err
	}
	page, err := q.resolve()
	if err != nil {
		return nil, err
	}
	items, total, err := s.store.ListAuditEvents(ctx, store.AuditFilter{Action: q.Action, Outcome: q.Outcome,
		ProjectID: q.ProjectID, TokenID: q.TokenID, From: from, To: to, Page: page})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return &List[*store.AuditEvent]{Items: items, Page: page, Total: total}, nil
}

// GetAudit returns the audit event with id, or store.ErrNotFound.
func (s *Service) GetAudit(ctx context.Context, id string) (*store.AuditEvent, error) {
	ev, err := s.store.GetAuditEvent(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load audit event: %w", err)
	}
	return ev, nil
}

const dateLayout = "2006-01-02"

// parseWindow parses a [from, to) window; a To date means the end of that
// day.
func parseWindow(fromS, toS string) (from, to time.Time, err error) {
	if from, _, err = parseTime("from", fromS); err != nil {
		return
	}
	var isDate bool
	if to, isDate, err = parseTime("to", toS); err != nil {
		return
	}
	if isDate {
		to = to.AddDate(0, 0, 1)
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return from, to, invalid("to", "must be after from")
	}
	return from, to, nil
}

func parseTime(field, s string) (t time.Time, isDate bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false, nil
	}
	if t, err := time.Parse(dateLayout, s); err == nil {
		return t, true, nil
	}
	t, err = time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false, invalid(field, "must be an RFC 3339 time or a YYYY-MM-DD date")
	}
	return t.UTC(), false, nil
}

// SeriesQuery selects a usage time series: the window [From, To), on
// Bucket boundaries, cut into Bucket-sized steps (store.BucketHour or
// store.BucketDay), split by Split ("" or store.SplitProject, SplitModel,
// SplitToken). ProjectID and TokenID filter when set.
type SeriesQuery struct {
	ProjectID string
	TokenID   string
	From, To  time.Time
	Bucket    string
	Split     string
}

// maxSeriesBuckets bounds the points of one series (a year of days, or
// about six weeks of hours), so a query cannot ask for millions.
const maxSeriesBuckets = 1000

// UsageSeries returns the usage points of q from the usage roll-up; buckets
// without usage are absent. A *ValidationError names a bad parameter.
func (s *Service) UsageSeries(ctx context.Context, q SeriesQuery) ([]store.UsagePoint, error) {
	f := store.UsageSeriesFilter{ProjectID: q.ProjectID, TokenID: q.TokenID, From: q.From.UTC(), To: q.To.UTC(),
		Bucket: q.Bucket, Split: q.Split}
	switch {
	case f.Bucket != store.BucketHour && f.Bucket != store.BucketDay:
		return nil, invalid("bucket", "must be one of hour, day")
	case f.Split != "" && f.Split != store.SplitProject && f.Split != store.SplitModel && f.Split != store.SplitToken:
		return nil, invalid("by", "must be one of project, model, token")
	}
	if err := f.Check(); err != nil {
		return nil, invalid("from", "%s", err)
	}
	step := time.Hour
	if f.Bucket == store.BucketDay {
		step = 24 * time.Hour
	}
	if f.To.Sub(f.From) > maxSeriesBuckets*step {
		return nil, invalid("from", "the window must span at most %d buckets of one %s", maxSeriesBuckets, f.Bucket)
	}
	points, err := s.store.UsageSeries(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	return points, nil
}
