package invalidate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"
)

// NewRedis returns a Bus that fans out with PUBLISH and SUBSCRIBE on channel
// (for example cfg.RedisKeyPrefix+"invalidate"). The subscription holds one
// connection of its own; the caller closes client after Run returns.
// Publishing happens in Run, off the caller's path; each publish is bounded
// by a one-second context, which go-redis honours only with
// Options.ContextTimeoutEnabled (otherwise its read/write timeouts bound
// it).
func NewRedis(client redis.UniversalClient, channel string, t Target, logger *slog.Logger) *Bus {
	return newBus(&redisTransport{client: client, channel: channel}, t, logger)
}

type redisTransport struct {
	client  redis.UniversalClient
	channel string
}

func (r *redisTransport) name() string { return "redis" }

func (r *redisTransport) publish(ctx context.Context, msg string) error {
	if err := r.client.Publish(ctx, r.channel, msg).Err(); err != nil {
		return fmt.Errorf("publish to redis: %w", err)
	}
	return nil
}

// listen runs one subscription on one connection. go-redis would reconnect a
// PubSub by itself; instead any error ends the subscription, so that the Bus
// sees every reconnect and flushes the cache after it.
func (r *redisTransport) listen(ctx context.Context, up func(), deliver func(string)) error {
	ps := r.client.Subscribe(ctx, r.channel)
	// Closing the PubSub interrupts a blocked receive when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	probing := false
	for {
		m, err := ps.ReceiveTimeout(ctx, healthInterval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !probing && ctx.Err() == nil {
				// Silent for a while: a PING must come back before the
				// next timeout, or the connection is dead.
				probing = true
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				err = ps.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			return fmt.Errorf("receive from redis: %w", err)
		}
		probing = false
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == r.channel {
				up()
			}
		case *redis.Message:
			deliver(m.Payload)
		}
	}
}
