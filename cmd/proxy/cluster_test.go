package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestRedisDownCountsOnlyUnreachability(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		down bool
	}{
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{errors.New("EOF"), true},
		{context.Canceled, false},
		{fmt.Errorf("eval: %w", context.DeadlineExceeded), false},
		{redis.ErrPoolTimeout, false},
		{&net.OpError{Op: "read", Err: timeoutErr{}}, false},
	} {
		if got := redisDown(tc.err); got != tc.down {
			t.Errorf("redisDown(%v) = %t, want %t", tc.err, got, tc.down)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
