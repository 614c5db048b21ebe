package h1

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether the idle connection nc is still open and has
// nothing waiting to be read: one non-blocking peek. An upstream that
// closed the connection while it sat in the pool (idle timeout, restart)
// shows EOF here, so the request goes out on a fresh connection instead of
// failing on a dead one.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// n == 0 without an error is EOF; n > 0 is data nobody asked for.
		open = n <= 0 && errors.Is(err, syscall.EAGAIN)
		return true
	})
	return err == nil && open
}
