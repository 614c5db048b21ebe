package h1

import (
	"context"
	"net"
)

// SetDial makes c open its connections with dial instead of over TCP.
func SetDial(c *Client, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	c.dialTCP = dial
}

// IdleConns returns the number of connections c keeps in its idle pool.
func IdleConns(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, conns := range c.idle {
		n += len(conns)
	}
	return n
}

// Framing names how resp's body is delimited as h1 set it up: "chunked",
// "length" (Content-Length, or no body at all) or "close".
func Framing(resp *Response) string {
	switch {
	case resp.body.chunked:
		return "chunked"
	case resp.body.remaining >= 0:
		return "length"
	}
	return "close"
}
