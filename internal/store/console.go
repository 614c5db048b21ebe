package store

import (
	"errors"
	"fmt"
	"time"
)

// ConsoleSession is a signed-in admin console session (SPEC §6.8). The
// session id itself is only in the browser's cookie; IDHash is its hex
// SHA-256. TokenMAC is the hex HMAC-SHA256 of the session id keyed with the
// credential the session depends on (the management token for Method
// SessionMethodToken), so rotating that credential ends the session; an
// SSO session depends on its Subject staying a console admin instead.
// Subject is who signed in, the actor of the session's audit events.
type ConsoleSession struct {
	IDHash     string
	Method     string
	Subject    string
	TokenMAC   string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // absolute expiry; idle expiry is judged from LastSeenAt
}

// Methods of ConsoleSession: opened with the management token, or by SSO
// (Subject is then the person's email and TokenMAC is empty).
const (
	SessionMethodToken = "token"
	SessionMethodSSO   = "sso"
)

// Usage series buckets (the roll-up's granularities) and splits.
const (
	BucketHour = RollupHour
	BucketDay  = RollupDay

	SplitProject = "project"
	SplitModel   = "model"
	SplitToken   = "token"
)

// UsageSeriesFilter selects usage for a time series, read from the hourly
// or daily roll-up (usage_rollup) rather than the usage rows. Bucket is
// BucketHour or BucketDay (UTC; the roll-up granularities); From and To are
// required and must fall on bucket boundaries. Split is "" (one series),
// SplitProject, SplitModel or SplitToken. Empty IDs do not filter.
type UsageSeriesFilter struct {
	ProjectID string
	TokenID   string
	From, To  time.Time // From inclusive, To exclusive
	Bucket    string
	Split     string
}

// Check reports a filter UsageSeries cannot answer from the roll-up.
func (f UsageSeriesFilter) Check() error {
	step := time.Hour
	switch f.Bucket {
	case BucketHour:
	case BucketDay:
		step = 24 * time.Hour
	default:
		return fmt.Errorf("unknown bucket %q", f.Bucket)
	}
	switch f.Split {
	case "", SplitProject, SplitModel, SplitToken:
	default:
		return fmt.Errorf("unknown split %q", f.Split)
	}
	if f.From.IsZero() || f.To.IsZero() || !f.From.Before(f.To) {
		return errors.New("from and to are required, from before to")
	}
	if !f.From.UTC().Truncate(step).Equal(f.From) || !f.To.UTC().Truncate(step).Equal(f.To) {
		return fmt.Errorf("from and to must fall on %s boundaries (UTC)", f.Bucket)
	}
	return nil
}

// UsagePoint is the usage of one bucket of one series: Key is the project
// ID, model or token ID of the split ("" without a split, or for rows
// without that ID).
type UsagePoint struct {
	Bucket           time.Time
	Key              string
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}
