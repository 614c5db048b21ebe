package store

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Roll-up granularities: the length of a UsageRollup bucket.
const (
	RollupHour = "hour"
	RollupDay  = "day"
)

// UsageRollup is one row of the usage roll-up: the sums of the usage rows
// whose CreatedAt falls in [Bucket, Bucket + one Granularity) in UTC and
// that share the other fields. Missing IDs are ""; Purpose is never ""
// (PurposeClient unless set).
type UsageRollup struct {
	Granularity      string
	Bucket           time.Time
	ProjectID        string
	TokenID          string
	AgentTokenID     string
	Model            string
	Cached           bool
	Purpose          string
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// RollUp sums rows into their hour and day roll-up rows, sorted by key
// (granularity, bucket, project, token, agent token, model, cached,
// purpose), the
// order in which implementations upsert them so that concurrent batches
// lock roll-up rows in one order and cannot deadlock.
func RollUp(rows []Usage) []UsageRollup {
	type key struct {
		granularity                  string
		bucket                       time.Time
		project, token, agent, model string
		cached                       bool
		purpose                      string
	}
	sums := make(map[key]*UsageRollup)
	for i := range rows {
		u := &rows[i]
		// Stores keep microseconds; truncating first keeps a row in the
		// bucket its stored time falls in.
		at := u.CreatedAt.UTC().Truncate(time.Microsecond)
		for _, g := range []struct {
			name string
			size time.Duration
		}{{RollupHour, time.Hour}, {RollupDay, 24 * time.Hour}} {
			k := key{g.name, at.Truncate(g.size), u.ProjectID, u.TokenID, u.AgentTokenID, u.Model, u.Cached,
				cmp.Or(u.Purpose, PurposeClient)}
			r := sums[k]
			if r == nil {
				r = &UsageRollup{Granularity: k.granularity, Bucket: k.bucket, ProjectID: k.project,
					TokenID: k.token, AgentTokenID: k.agent, Model: k.model, Cached: k.cached, Purpose: k.purpose}
				sums[k] = r
			}
			r.Requests++
			r.PromptTokens += int64(u.PromptTokens)
			r.CompletionTokens += int64(u.CompletionTokens)
			r.TotalTokens += int64(u.TotalTokens)
		}
	}
	out := make([]UsageRollup, 0, len(sums))
	for _, r := range sums {
		out = append(out, *r)
	}
	slices.SortFunc(out, compareRollup)
	return out
}

func compareRollup(a, b UsageRollup) int {
	return cmp.Or(
		strings.Compare(a.Granularity, b.Granularity),
		a.Bucket.Compare(b.Bucket),
		strings.Compare(a.ProjectID, b.ProjectID),
		strings.Compare(a.TokenID, b.TokenID),
		strings.Compare(a.AgentTokenID, b.AgentTokenID),
		strings.Compare(a.Model, b.Model),
		cmp.Compare(boolInt(a.Cached), boolInt(b.Cached)),
		strings.Compare(a.Purpose, b.Purpose),
	)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Sources of a UsageSpan.
const (
	SpanRaw  = "raw"      // the usage rows themselves
	SpanHour = RollupHour // hourly roll-up rows
	SpanDay  = RollupDay  // daily roll-up rows
)

// UsageSpan is a piece of a usage query's time range and where its sums
// come from. A zero From or To leaves that side open.
type UsageSpan struct {
	Source   string
	From, To time.Time
}

// SplitUsageRange splits [from, to) (a zero bound is open) into the pieces
// SumUsage reads: whole UTC days from daily roll-up rows, whole hours at
// the ends of those from hourly ones, and the ragged minutes at the very
// edges from raw usage rows. The pieces are disjoint, cover exactly [from,
// to), and come in time order; an empty range has none.
func SplitUsageRange(from, to time.Time) []UsageSpan {
	from, to = from.UTC(), to.UTC()
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return nil
	}
	var spans []UsageSpan
	// add appends [a, b) unless it is empty. Used only where a zero a
	// and a zero b are the same open end, so equal bounds mean empty.
	add := func(source string, a, b time.Time) {
		if a.Equal(b) || (!a.IsZero() && !b.IsZero() && b.Before(a)) {
			return
		}
		spans = append(spans, UsageSpan{Source: source, From: a, To: b})
	}
	fromHour, toHour := ceil(from, time.Hour), floor(to, time.Hour)
	if !fromHour.IsZero() && !toHour.IsZero() && !fromHour.Before(toHour) {
		// Not one whole hour inside: raw rows only.
		return []UsageSpan{{Source: SpanRaw, From: from, To: to}}
	}
	fromDay, toDay := ceil(fromHour, 24*time.Hour), floor(toHour, 24*time.Hour)
	add(SpanRaw, from, fromHour)
	switch {
	case fromDay.IsZero() && toDay.IsZero():
		spans = append(spans, UsageSpan{Source: SpanDay})
	case !fromDay.IsZero() && !toDay.IsZero() && !fromDay.Before(toDay):
		add(SpanHour, fromHour, toHour)
	default:
		add(SpanHour, fromHour, fromDay)
		add(SpanDay, fromDay, toDay)
		add(SpanHour, toDay, toHour)
	}
	add(SpanRaw, toHour, to)
	return spans
}

// floor rounds t down to a multiple of d (UTC); zero stays zero (open).
func floor(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Truncate(d)
}

// ceil rounds t up to a multiple of d (UTC); zero stays zero (open).
func ceil(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	f := t.Truncate(d)
	if f.Equal(t) {
		return f
	}
	return f.Add(d)
}
