package store

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSplitUsageRange(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var open time.Time
	tests := []struct {
		name     string
		from, to time.Time
		want     []UsageSpan
	}{
		{"open both ends", open, open, []UsageSpan{{Source: SpanDay}}},
		{"empty", at("2025-03-10T10:00:00Z"), at("2025-03-10T10:00:00Z"), nil},
		{"reversed", at("2025-03-10T11:00:00Z"), at("2025-03-10T10:00:00Z"), nil},
		{"inside one hour", at("2025-03-10T10:05:00Z"), at("2025-03-10T10:55:00Z"),
			[]UsageSpan{{SpanRaw, at("2025-03-10T10:05:00Z"), at("2025-03-10T10:55:00Z")}}},
		{"across an hour boundary without a whole hour", at("2025-03-10T10:05:00Z"), at("2025-03-10T11:55:00Z"),
			[]UsageSpan{{SpanRaw, at("2025-03-10T10:05:00Z"), at("2025-03-10T11:55:00Z")}}},
		{"hours inside one day", at("2025-03-10T10:05:00Z"), at("2025-03-10T13:30:00Z"), []UsageSpan{
			{SpanRaw, at("2025-03-10T10:05:00Z"), at("2025-03-10T11:00:00Z")},
			{SpanHour, at("2025-03-10T11:00:00Z"), at("2025-03-10T13:00:00Z")},
			{SpanRaw, at("2025-03-10T13:00:00Z"), at("2025-03-10T13:30:00Z")},
		}},
		{"aligned days", at("2025-03-10T00:00:00Z"), at("2025-03-12T00:00:00Z"), []UsageSpan{
			{SpanDay, at("2025-03-10T00:00:00Z"), at("2025-03-12T00:00:00Z")},
		}},
		{"ragged days, in another zone", at("2025-03-10T05:30:00.5+05:30"), at("2025-03-13T02:00:00.000001Z"), []UsageSpan{
			{SpanRaw, at("2025-03-10T00:00:00.5Z"), at("2025-03-10T01:00:00Z")},
			{SpanHour, at("2025-03-10T01:00:00Z"), at("2025-03-11T00:00:00Z")},
			{SpanDay, at("2025-03-11T00:00:00Z"), at("2025-03-13T00:00:00Z")},
			{SpanHour, at("2025-03-13T00:00:00Z"), at("2025-03-13T02:00:00Z")},
			{SpanRaw, at("2025-03-13T02:00:00Z"), at("2025-03-13T02:00:00.000001Z")},
		}},
		{"open start", open, at("2025-03-10T10:30:00Z"), []UsageSpan{
			{SpanDay, open, at("2025-03-10T00:00:00Z")},
			{SpanHour, at("2025-03-10T00:00:00Z"), at("2025-03-10T10:00:00Z")},
			{SpanRaw, at("2025-03-10T10:00:00Z"), at("2025-03-10T10:30:00Z")},
		}},
		{"open end", at("2025-03-10T23:59:00Z"), open, []UsageSpan{
			{SpanRaw, at("2025-03-10T23:59:00Z"), at("2025-03-11T00:00:00Z")},
			{SpanDay, at("2025-03-11T00:00:00Z"), open},
		}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, SplitUsageRange(tc.from, tc.to)); diff != "" {
			t.Errorf("%s: SplitUsageRange(%s, %s) (-want +got):\n%s", tc.name, tc.from, tc.to, diff)
		}
	}
}

// TestSplitUsageRangeCovers checks random ranges: the spans are in order,
// touch end to end from from to to, and roll-up spans are aligned to their
// granularity.
func TestSplitUsageRangeCovers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	for range 10000 {
		from := base.Add(time.Duration(r.Int64N(int64(96 * time.Hour))))
		to := from.Add(time.Duration(r.Int64N(int64(96 * time.Hour))))
		if r.IntN(4) == 0 {
			from = from.Truncate(time.Hour)
		}
		if r.IntN(4) == 0 {
			to = to.Truncate(24 * time.Hour)
		}
		spans := SplitUsageRange(from, to)
		if !from.Before(to) {
			if len(spans) != 0 {
				t.Fatalf("SplitUsageRange(%s, %s) = %v, want none", from, to, spans)
			}
			continue
		}
		at := from
		for _, sp := range spans {
			size := map[string]time.Duration{SpanHour: time.Hour, SpanDay: 24 * time.Hour}[sp.Source]
			if !sp.From.Equal(at) || !sp.From.Before(sp.To) ||
				(size > 0 && (!sp.From.Truncate(size).Equal(sp.From) || !sp.To.Truncate(size).Equal(sp.To))) {
				t.Fatalf("SplitUsageRange(%s, %s) = %v: bad span %v", from, to, spans, sp)
			}
			at = sp.To
		}
		if !at.Equal(to) {
			t.Fatalf("SplitUsageRange(%s, %s) = %v ends at %s", from, to, spans, at)
		}
	}
}
