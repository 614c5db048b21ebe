package bench

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"p50 of four is the second", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p50 of five is the middle", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(seq(100)...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(1, 2, 3), 100, 3 * time.Millisecond},
		{"tiny p is the min", ms(1, 2, 3), 0.1, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestMedian(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{nan, 5, nan}, 5},
		{[]float64{nan}, nan},
		{nil, nan},
	}
	for _, tt := range tests {
		got := Median(tt.xs)
		if got != tt.want && !(math.IsNaN(got) && math.IsNaN(tt.want)) {
			t.Errorf("Median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
}

func TestSoakGrowth(t *testing.T) {
	tests := []struct {
		samples []float64
		want    float64
	}{
		{[]float64{10, 10, 10, 10, 10, 11}, 10.5 / 10},
		{[]float64{20, 10, 10}, 0.5},
		{[]float64{10, 12, 14, 16, 18, 20, 22, 24, 26}, 24.0 / 12},
	}
	for _, tt := range tests {
		if got := SoakGrowth(tt.samples); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("SoakGrowth(%v) = %v, want %v", tt.samples, got, tt.want)
		}
	}
	if got := SoakGrowth([]float64{1, 2}); !math.IsNaN(got) {
		t.Errorf("SoakGrowth of two samples = %v, want NaN", got)
	}
}
