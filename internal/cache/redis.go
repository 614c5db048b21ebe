package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/breaker"
)

// Redis keeps entries in Redis, shared by every replica of a deployment,
// one string per entry with Redis's own expiry. Every call is bounded by
// Timeout and goes through the breaker; a failure is a miss (Get) or a
// skipped write (Set), logged at debug and counted in Errors. It is safe
// for concurrent use.
type Redis struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
	brk     *breaker.Breaker
	log     *slog.Logger
	errors  atomic.Int64
}

var _ Cache = (*Redis)(nil)

// RedisOptions configure a Redis cache.
type RedisOptions struct {
	// Prefix starts every key (REDIS_KEY_PREFIX + "cache:").
	Prefix string
	// Timeout bounds each call (REDIS_TIMEOUT); zero leaves it to ctx and
	// the client's own timeouts.
	Timeout time.Duration
	// Breaker, shared with the other Redis users, makes calls fail fast
	// while Redis is away; nil calls Redis every time.
	Breaker *breaker.Breaker
	// Logger receives debug logs of failed calls; nil discards them.
	Logger *slog.Logger
}

// NewRedis returns a cache in rdb. The caller closes rdb.
func NewRedis(rdb *redis.Client, opts RedisOptions) *Redis {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Redis{rdb: rdb, prefix: opts.Prefix, timeout: opts.Timeout, brk: opts.Breaker, log: opts.Logger}
}

// Get returns the entry under key; a Redis failure or an entry that does
// not decode is a miss.
func (c *Redis) Get(ctx context.Context, key string) (Entry, bool) {
	var raw []byte
	err := c.do(ctx, func(ctx context.Context) error {
		var err error
		raw, err = c.rdb.Get(ctx, c.prefix+key).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil // a miss, not a failure of Redis
		}
		return err
	})
	if err != nil {
		c.fail(ctx, "get", err)
		return Entry{}, false
	}
	if raw == nil {
		return Entry{}, false
	}
	e, err := decode(raw)
	if err != nil {
		c.fail(ctx, "decode", err)
		return Entry{}, false
	}
	return e, true
}

// Set stores e under key for ttl (at millisecond precision); a failure
// drops the write.
func (c *Redis) Set(ctx context.Context, key string, e Entry, ttl time.Duration) {
	if ttl < time.Millisecond {
		return
	}
	raw, err := encode(e)
	if err != nil {
		c.fail(ctx, "encode", err)
		return
	}
	err = c.do(ctx, func(ctx context.Context) error {
		return c.rdb.Set(ctx, c.prefix+key, raw, ttl).Err()
	})
	if err != nil {
		c.fail(ctx, "set", err)
	}
}

// Errors returns how many calls failed since the cache was made.
func (c *Redis) Errors() int64 { return c.errors.Load() }

func (c *Redis) do(ctx context.Context, fn func(context.Context) error) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	if c.brk == nil {
		return fn(ctx)
	}
	return c.brk.Do(ctx, fn)
}

func (c *Redis) fail(ctx context.Context, op string, err error) {
	c.errors.Add(1)
	c.log.DebugContext(ctx, "response cache call failed", "op", op, "error", err)
}

// An encoded entry is the magic, the length of the JSON metadata as a
// uvarint, the metadata, then the raw body.
const magic = "llmc1"

type meta struct {
	Status  int         `json:"s"`
	Header  http.Header `json:"h,omitempty"`
	Model   string      `json:"m,omitempty"`
	Usage   [3]int      `json:"u"`
	Created int64       `json:"c"` // Unix milliseconds
}

func encode(e Entry) ([]byte, error) {
	m, err := json.Marshal(meta{Status: e.Status, Header: e.Header, Model: e.Model,
		Usage: [3]int{e.PromptTokens, e.CompletionTokens, e.TotalTokens}, Created: e.Created.UnixMilli()})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(magic)+binary.MaxVarintLen64+len(m)+len(e.Body))
	out = append(out, magic...)
	out = binary.AppendUvarint(out, uint64(len(m)))
	out = append(out, m...)
	return append(out, e.Body...), nil
}

var errCorrupt = errors.New("corrupt cache entry")

func decode(raw []byte) (Entry, error) {
	if len(raw) < len(magic) || string(raw[:len(magic)]) != magic {
		return Entry{}, errCorrupt
	}
	raw = raw[len(magic):]
	n, w := binary.Uvarint(raw)
	if w <= 0 || n > uint64(len(raw)-w) {
		return Entry{}, errCorrupt
	}
	var m meta
	if err := json.Unmarshal(raw[w:w+int(n)], &m); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	return Entry{Status: m.Status, Header: m.Header, Body: raw[w+int(n):], Model: m.Model,
		PromptTokens: m.Usage[0], CompletionTokens: m.Usage[1], TotalTokens: m.Usage[2],
		Created: time.UnixMilli(m.Created)}, nil
}
