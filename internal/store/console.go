package store

import "time"

// ConsoleSession is a signed-in admin console session (SPEC §6.8). The
// session id itself is only in the browser's cookie; IDHash is its hex
// SHA-256. TokenMAC is the hex HMAC-SHA256 of the session id keyed with the
// credential the session depends on (the management token for Method
// SessionMethodToken), so rotating that credential ends the session.
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

// SessionMethodToken is a console session opened with the management token.
const SessionMethodToken = "token"

// Usage series buckets and splits.
const (
	BucketHour = "hour"
	BucketDay  = "day"

	SplitProject = "project"
	SplitModel   = "model"
	SplitToken   = "token"
)

// UsageSeriesFilter selects usage rows for a time series. Bucket is
// BucketHour or BucketDay (UTC); Split is "" (one series), SplitProject,
// SplitModel or SplitToken. Zero fields do not filter.
type UsageSeriesFilter struct {
	ProjectID string
	TokenID   string
	From, To  time.Time // From inclusive, To exclusive
	Bucket    string
	Split     string
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
