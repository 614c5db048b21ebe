//go:build !linux

package h1

import "net"

// alive cannot peek without blocking here; a connection the upstream
// closed while idle fails its next write and is retried on a new one.
func alive(net.Conn) bool { return true }
