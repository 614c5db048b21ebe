package invalidate

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
)

var (
	_ manage.Invalidator = (*Bus)(nil)
	_ Target             = (*auth.Authenticator)(nil)
)

// backend opens Buses that share one channel on one server. open connects
// to addr, which is the server itself or a forwarder in front of it.
type backend struct {
	server string
	open   func(t *testing.T, addr string, target Target) *Bus
}

func redisBackend(t *testing.T) backend {
	rawURL, prefix := testenv.Redis(t)
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("parse TEST_REDIS_URL: %v", err)
	}
	return backend{
		server: opts.Addr,
		open: func(t *testing.T, addr string, target Target) *Bus {
			o := *opts
			o.Addr = addr
			o.ContextTimeoutEnabled = true
			client := redis.NewClient(&o)
			t.Cleanup(func() { _ = client.Close() })
			return NewRedis(client, prefix+"invalidate", target, testLogger(t))
		},
	}
}

func postgresBackend(t *testing.T) backend {
	u, err := url.Parse(testenv.PostgresURL(t))
	if err != nil {
		t.Fatalf("parse database url: %v", err)
	}
	return backend{
		server: u.Host,
		open: func(t *testing.T, addr string, target Target) *Bus {
			v := *u
			v.Host = addr
			pool, err := pgxpool.New(context.Background(), v.String())
			if err != nil {
				t.Fatalf("pgxpool.New: %v", err)
			}
			t.Cleanup(pool.Close)
			return NewPostgres(pool, "llmproxy_invalidate", target, testLogger(t))
		},
	}
}

var backends = []struct {
	name  string
	setup func(t *testing.T) backend
}{
	{"Redis", redisBackend},
	{"Postgres", postgresBackend},
}

func TestFanOut(t *testing.T) {
	t.Parallel()
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			be := bk.setup(t)
			recA, recB := newRecorder(), newRecorder()
			a, b := be.open(t, be.server, recA), be.open(t, be.server, recB)
			run(t, a)
			run(t, b)
			recA.await(t, "flush", 5*time.Second)
			recB.await(t, "flush", 5*time.Second)
			if !a.Connected() || !b.Connected() {
				t.Fatalf("Connected() = %t, %t after subscribing, want true", a.Connected(), b.Connected())
			}

			for _, tc := range []struct {
				what       string
				invalidate func(id string)
				event      string
			}{
				{"token", a.InvalidateToken, "t:tok-1"},
				{"project", a.InvalidateProject, "p:proj-1"},
			} {
				tc.invalidate(tc.event[2:])
				if !recA.recorded(tc.event) {
					t.Errorf("%s invalidation did not reach the local cache before returning", tc.what)
				}
				latency := recB.await(t, tc.event, time.Second)
				t.Logf("%s invalidation reached the other replica in %s", tc.what, latency)
			}
		})
	}
}

func TestResubscribeAfterCut(t *testing.T) {
	t.Parallel()
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			be := bk.setup(t)
			fwd := newForwarder(t, be.server)
			recA, recB := newRecorder(), newRecorder()
			a, b := be.open(t, be.server, recA), be.open(t, fwd.addr(), recB)
			run(t, a)
			run(t, b)
			recA.await(t, "flush", 5*time.Second)
			recB.await(t, "flush", 5*time.Second)
			a.InvalidateToken("before")
			recB.await(t, "t:before", time.Second)

			fwd.cut()
			took := recB.await(t, "flush", 5*time.Second)
			t.Logf("resubscribed and flushed %s after the cut", took)
			if !b.Connected() {
				t.Errorf("Connected() = false after resubscribing")
			}
			a.InvalidateProject("after")
			recB.await(t, "p:after", time.Second)
		})
	}
}

// signalPublish is a transport that signals the end of each publish on
// done (capacity 1: signals not yet received merge).
type signalPublish struct {
	transport
	done chan struct{}
}

func (s signalPublish) publish(ctx context.Context, msg string) error {
	err := s.transport.publish(ctx, msg)
	select {
	case s.done <- struct{}{}:
	default:
	}
	return err
}

func TestPublishWhileDown(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			be := bk.setup(t)
			fwd := newForwarder(t, be.server)
			fwd.setBlackhole(true)
			recA, recB := newRecorder(), newRecorder()
			a, b := be.open(t, fwd.addr(), recA), be.open(t, be.server, recB)
			published := make(chan struct{}, 1)
			a.transport = signalPublish{transport: a.transport, done: published}
			run(t, a)
			run(t, b)
			recB.await(t, "flush", 5*time.Second)

			// More than the queue holds, so the overflow path runs too.
			const n = queueSize + 500
			start := time.Now()
			for i := range n {
				a.InvalidateToken(strconv.Itoa(i))
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("%d invalidations with the channel down took %s, want well under 1s", n, took)
			}
			if a.Connected() {
				t.Errorf("Connected() = true while the server never answers")
			}
			for i := range n {
				if e := <-recA.events; e != "t:"+strconv.Itoa(i) {
					t.Fatalf("local event %d = %q, want %q", i, e, "t:"+strconv.Itoa(i))
				}
			}

			fwd.setBlackhole(false)
			fwd.cut()
			recA.await(t, "flush", 15*time.Second)
			// Invalidations are dropped while the queue is full: let the
			// backlog (a round trip each) drain first, looking again after
			// each publish; it is stuck when none ends for 10 s.
			for len(a.queue) > 0 {
				select {
				case <-published:
				case <-time.After(10 * time.Second):
					t.Fatalf("%d invalidations still queued, none published for 10s", len(a.queue))
				}
			}
			recB.drain()
			a.InvalidateToken("back")
			recB.await(t, "t:back", 5*time.Second)
		})
	}
}

func TestLocal(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	b := NewLocal(rec)
	b.InvalidateToken("tok")
	b.InvalidateProject("proj")
	for _, want := range []string{"t:tok", "p:proj"} {
		select {
		case e := <-rec.events:
			if e != want {
				t.Errorf("recorded %q, want %q", e, want)
			}
		default:
			t.Errorf("%q not recorded synchronously", want)
		}
	}
	if !b.Connected() {
		t.Errorf("Connected() = false for a local bus, want true")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := b.Run(t.Context()); err == nil {
		t.Errorf("second Run: no error")
	}
	select {
	case e := <-rec.events:
		t.Errorf("unexpected event %q (a local bus never flushes)", e)
	default:
	}
}

func TestDeliver(t *testing.T) {
	t.Parallel()
	tests := []struct {
		msg  string
		want string // recorded event, "" for none
	}{
		{"t:abc", "t:abc"},
		{"p:0b7e-uuid", "p:0b7e-uuid"},
		{"t:with:colon", "t:with:colon"},
		{"t:", ""},
		{"p:", ""},
		{"x:abc", ""},
		{"", ""},
		{"tabc", ""},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.msg), func(t *testing.T) {
			rec := newRecorder()
			b := NewLocal(rec)
			b.deliver(tc.msg)
			var got string
			select {
			case got = <-rec.events:
			default:
			}
			if got != tc.want {
				t.Errorf("deliver(%q) recorded %q, want %q", tc.msg, got, tc.want)
			}
		})
	}
}
