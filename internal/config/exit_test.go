package config

import (
	"errors"
	"fmt"
	"testing"
)

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&Error{Problems: []string{"DATABASE_URL: bad"}}, 2},
		{fmt.Errorf("load: %w", &Error{}), 2},
		{UsageError{"unknown verb"}, 2},
		{fmt.Errorf("run: %w", UsageError{"x"}), 2},
		{errors.New("database unreachable"), 1},
	} {
		if got := ExitStatus(tc.err); got != tc.want {
			t.Errorf("ExitStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
