package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// randomName returns prefix plus 12 random hex digits.
func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// createDatabase creates an empty database on the server of adminURL (as
// internal/testenv does for tests) and returns its URL and a function that
// drops it.
func createDatabase(ctx context.Context, adminURL string) (string, func(context.Context) error, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("parse admin database URL: %w", err)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to the admin database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name := randomName("bench_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	drop := func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// redisProbe reads the Redis server's command counters and counts what the
// proxy sends.
type redisProbe struct {
	opts   *redis.Options
	client *redis.Client
	prefix string
}

func newRedisProbe(ctx context.Context, redisURL, prefix string) (*redisProbe, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("parse Redis URL: %w", err)
	}
	one := *opts
	one.PoolSize = 1
	r := &redisProbe{opts: opts, client: redis.NewClient(&one), prefix: prefix}
	if err := r.client.Ping(ctx).Err(); err != nil {
		_ = r.client.Close()
		return nil, fmt.Errorf("ping Redis: %w", err)
	}
	return r, nil
}

// commands returns the server's count of processed commands other than
// INFO (so the probe's own readings cancel out).
func (r *redisProbe) commands(ctx context.Context) (int64, error) {
	text, err := r.client.Info(ctx, "stats", "commandstats").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO: %w", err)
	}
	total, calls, err := ParseInfo(text)
	if err != nil {
		return 0, err
	}
	return total - calls["info"], nil
}

// ParseInfo returns total_commands_processed and the calls per command
// from the text of INFO stats commandstats.
func ParseInfo(text string) (int64, map[string]int64, error) {
	total := int64(-1)
	calls := map[string]int64{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, nil, fmt.Errorf("parse total_commands_processed: %w", err)
			}
			total = n
			continue
		}
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, _ := strings.Cut(rest, ":")
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, nil, fmt.Errorf("parse cmdstat_%s calls: %w", name, err)
				}
				calls[name] = n
			}
		}
	}
	if total < 0 {
		return 0, nil, errors.New("redis INFO has no total_commands_processed")
	}
	return total, calls, nil
}

// cpu returns the CPU time the Redis server has used (INFO cpu:
// used_cpu_user + used_cpu_sys, every thread of the server).
func (r *redisProbe) cpu(ctx context.Context) (time.Duration, error) {
	text, err := r.client.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO cpu: %w", err)
	}
	return ParseInfoCPU(text)
}

// ParseInfoCPU returns used_cpu_user + used_cpu_sys from the text of INFO
// cpu.
func ParseInfoCPU(text string) (time.Duration, error) {
	var sum float64
	found := 0
	for line := range strings.Lines(text) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "used_cpu_user" && k != "used_cpu_sys") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", k, err)
		}
		sum += f
		found++
	}
	if found != 2 {
		return 0, errors.New("redis INFO cpu lacks used_cpu_user or used_cpu_sys")
	}
	return time.Duration(sum * float64(time.Second)), nil
}

// dbProbe reads the CPU time of the PostgreSQL backends serving one
// database; the server must run on this machine (its /proc is read).
type dbProbe struct {
	conn *pgx.Conn
}

func newDBProbe(ctx context.Context, dbURL string) (*dbProbe, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect to the benchmark database: %w", err)
	}
	return &dbProbe{conn: conn}, nil
}

// cpu returns the CPU time used so far by each backend connected to the
// probe's database (by PID), the probe's own excepted.
func (d *dbProbe) cpu(ctx context.Context) (map[int]time.Duration, error) {
	rows, err := d.conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		return nil, fmt.Errorf("list database backends: %w", err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("list database backends: %w", err)
	}
	per := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		c, err := CPUTime(int(pid))
		if err != nil {
			return nil, fmt.Errorf("database backend %d (is PostgreSQL on this machine?): %w", pid, err)
		}
		per[int(pid)] = c
	}
	return per, nil
}

// CPUDelta is the CPU time the backends of after used since before: a
// backend new in after counts whole, one that exited in between is lost
// (so the figure is a lower bound).
func CPUDelta(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, c := range after {
		d += c - before[pid]
	}
	return d
}

func (d *dbProbe) close(ctx context.Context) error { return d.conn.Close(ctx) }

// cleanup deletes every key under the probe's prefix and closes it.
func (r *redisProbe) cleanup(ctx context.Context) error {
	defer r.client.Close()
	iter := r.client.Scan(ctx, 0, r.prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			if err := r.client.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("delete bench keys: %w", err)
			}
			keys = keys[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan bench keys: %w", err)
	}
	if len(keys) > 0 {
		if err := r.client.Unlink(ctx, keys...).Err(); err != nil {
			return fmt.Errorf("delete bench keys: %w", err)
		}
	}
	return nil
}

// MonitorCounts are the commands seen by MONITOR that belong to the
// benchmark's proxy: sent by a connection that touched a key or channel
// under its prefix, or run inside a Lua script on such a key.
type MonitorCounts struct {
	Sent     map[string]int // command name → calls sent by the proxy's connections
	InScript map[string]int // command name → calls made by scripts on the prefix
}

// Total returns the number of commands the proxy sent.
func (m MonitorCounts) Total() int {
	n := 0
	for _, c := range m.Sent {
		n += c
	}
	return n
}

// monitor is a running MONITOR connection.
type monitor struct {
	conn   net.Conn
	prefix string
	done   chan struct{}
	mu     sync.Mutex
	bySrc  map[string]map[string]int
	ours   map[string]bool
	script map[string]int
	err    error
}

// startMonitor opens a dedicated MONITOR connection. MONITOR slows Redis
// down, so it runs only in a run of its own that measures nothing else.
func (r *redisProbe) startMonitor(ctx context.Context) (*monitor, error) {
	if r.opts.TLSConfig != nil {
		return nil, errors.New("MONITOR over TLS is not supported by the benchmark")
	}
	conn, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, r.opts.Network, r.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial Redis for MONITOR: %w", err)
	}
	rd := bufio.NewReaderSize(conn, 1<<20)
	send := func(args ...string) error {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := conn.Write([]byte(b.String())); err != nil {
			return err
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "+") {
			return fmt.Errorf("%s: %s", args[0], strings.TrimSpace(line))
		}
		return nil
	}
	if r.opts.Password != "" {
		auth := []string{"AUTH", r.opts.Password}
		if r.opts.Username != "" {
			auth = []string{"AUTH", r.opts.Username, r.opts.Password}
		}
		if err := send(auth...); err != nil {
			conn.Close()
			return nil, errors.New("redis AUTH for MONITOR was refused")
		}
	}
	if err := send("MONITOR"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("redis MONITOR: %w", err)
	}
	m := &monitor{conn: conn, prefix: r.prefix, done: make(chan struct{}),
		bySrc: map[string]map[string]int{}, ours: map[string]bool{}, script: map[string]int{}}
	go m.read(rd)
	return m, nil
}

func (m *monitor) read(rd *bufio.Reader) {
	defer close(m.done)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			return
		}
		src, cmd, ok := ParseMonitorLine(line)
		if !ok {
			continue
		}
		mine := strings.Contains(line, m.prefix)
		m.mu.Lock()
		if src == "lua" {
			if mine {
				m.script[cmd]++
			}
		} else {
			if m.bySrc[src] == nil {
				m.bySrc[src] = map[string]int{}
			}
			m.bySrc[src][cmd]++
			if mine {
				m.ours[src] = true
			}
		}
		m.mu.Unlock()
	}
}

// stop closes the connection, waits for the reader and returns the counts.
func (m *monitor) stop() MonitorCounts {
	_ = m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	c := MonitorCounts{Sent: map[string]int{}, InScript: m.script}
	for src, cmds := range m.bySrc {
		if !m.ours[src] {
			continue
		}
		for name, n := range cmds {
			c.Sent[name] += n
		}
	}
	return c
}

// ParseMonitorLine returns the source ("127.0.0.1:5000", "lua", ...) and
// the lower-case command name of one MONITOR line, such as
// `+1700000000.123456 [0 127.0.0.1:5000] "evalsha" "abc" "1" "k"`.
func ParseMonitorLine(line string) (src, cmd string, ok bool) {
	_, rest, ok := strings.Cut(line, " [")
	if !ok {
		return "", "", false
	}
	inside, rest, ok := strings.Cut(rest, "] \"")
	if !ok {
		return "", "", false
	}
	_, src, ok = strings.Cut(inside, " ")
	if !ok {
		return "", "", false
	}
	cmd, _, ok = strings.Cut(rest, "\"")
	if !ok {
		return "", "", false
	}
	return src, strings.ToLower(cmd), true
}
