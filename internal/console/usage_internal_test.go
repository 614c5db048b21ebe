package console

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func TestBuildUsage(t *testing.T) {
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	p := func(d int, key string, req, tok int64) store.UsagePoint {
		return store.UsagePoint{Bucket: from.Add(time.Duration(d) * day), Key: key, Requests: req, TotalTokens: tok, PromptTokens: tok}
	}
	t.Run("zero-filled buckets, busiest key first", func(t *testing.T) {
		points := []store.UsagePoint{p(0, "a", 1, 10), p(2, "a", 2, 20), p(1, "b", 5, 7), p(3, "b", 1, 1),
			p(9, "a", 100, 100)} // outside the window: ignored by the chart
		ch, rows, total := buildUsage(points[:4], from, from.Add(3*day), day, map[string]string{"a": "A", "b": "B"})
		want := chartData{
			X: []int64{from.Unix(), from.Add(day).Unix(), from.Add(2 * day).Unix()},
			Series: []chartSeries{
				{Label: "B", Requests: []int64{0, 5, 0}, Tokens: []int64{0, 7, 0}},
				{Label: "A", Requests: []int64{1, 0, 2}, Tokens: []int64{10, 0, 20}},
			},
		}
		if d := cmp.Diff(want, ch); d != "" {
			t.Errorf("chart (-want +got):\n%s", d)
		}
		if len(rows) != 2 || rows[0].Label != "B" || rows[0].Requests != 6 || rows[1].Requests != 3 {
			t.Errorf("rows = %+v", rows)
		}
		if total.Requests != 9 || total.TotalTokens != 38 {
			t.Errorf("total = %+v", total)
		}
	})
	t.Run("more keys than lines: the rest are other", func(t *testing.T) {
		var points []store.UsagePoint
		labels := map[string]string{}
		for i := range maxSeries + 3 {
			key := fmt.Sprintf("k%02d", i)
			labels[key] = key
			points = append(points, p(0, key, int64(100-i), 1))
		}
		ch, rows, _ := buildUsage(points, from, from.Add(day), day, labels)
		if len(ch.Series) != maxSeries+1 || ch.Series[maxSeries].Label != "other" {
			t.Fatalf("series = %d, last %q; want %d with other last", len(ch.Series), ch.Series[len(ch.Series)-1].Label, maxSeries+1)
		}
		if got, want := ch.Series[maxSeries].Requests[0], int64(100-8+100-9+100-10); got != want {
			t.Errorf("other = %d requests, want %d", got, want)
		}
		if len(rows) != maxSeries+3 {
			t.Errorf("the table has %d rows, want every key (%d)", len(rows), maxSeries+3)
		}
	})
	t.Run("exactly one more key than lines gets its own line", func(t *testing.T) {
		var points []store.UsagePoint
		for i := range maxSeries + 1 {
			points = append(points, p(0, fmt.Sprint(i), 1, 1))
		}
		ch, _, _ := buildUsage(points, from, from.Add(day), day, map[string]string{})
		if len(ch.Series) != maxSeries+1 {
			t.Fatalf("series = %d, want %d", len(ch.Series), maxSeries+1)
		}
		for _, s := range ch.Series {
			if s.Label == "other" {
				t.Fatal("an 'other' line for a single key")
			}
		}
	})
}
