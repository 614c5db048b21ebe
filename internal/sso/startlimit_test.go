package sso_test

import (
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// The client addresses of these tests, sent as X-Forwarded-For (the
// harness trusts its loopback peer).
const (
	addrA = "198.51.100.7"
	addrB = "203.0.113.9"
)

// deviceCodeFrom asks base for a device code as the client at addr.
func deviceCodeFrom(t *testing.T, base, addr string) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/auth/device/code", strings.NewReader("client_id=cli&client_name=cli"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", addr)
	return send(t, http.DefaultClient, req)
}

// browserAt is a fresh browser at the client address addr.
func browserAt(t *testing.T, addr string) *browser {
	b := newBrowser(t)
	b.header.Set("X-Forwarded-For", addr)
	return b
}

// signIn presses the Sign in button of base's devices page in b.
func (b *browser) signIn(base string) response {
	b.t.Helper()
	offer := b.get(base + "/auth/devices")
	return b.post(base+"/auth/devices/signin", url.Values{"csrf": {csrf(b.t, offer)}})
}

// loginRows deletes every device code and browser sign-in in st and
// returns how many there were.
func loginRows(t *testing.T, st store.Store) (pending, sessions int64) {
	t.Helper()
	far := time.Now().AddDate(100, 0, 0)
	pending, err := st.DeletePendingAuthorizationsExpiredBefore(t.Context(), far, 10000)
	if err != nil {
		t.Fatal(err)
	}
	sessions, err = st.DeleteSSOSessionsExpiredBefore(t.Context(), far, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return pending, sessions
}

func wantRows(t *testing.T, st store.Store, pending, sessions int64) {
	t.Helper()
	if p, s := loginRows(t, st); p != pending || s != sessions {
		t.Errorf("rows: %d device codes and %d sign-ins, want %d and %d", p, s, pending, sessions)
	}
}

// retryAfter returns the Retry-After seconds of r, which must lie within
// the refill interval of a limit of limit per minute.
func retryAfter(t *testing.T, r response, limit int) int {
	t.Helper()
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > int(time.Minute/time.Second)/limit {
		t.Fatalf("Retry-After %q, want 1 to %d seconds", r.header.Get("Retry-After"), int(time.Minute/time.Second)/limit)
	}
	return secs
}

// wantCodeLimited checks a device-code answer refused by a limit of limit
// per minute.
func wantCodeLimited(t *testing.T, r response, limit int) {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("device code over the limit: %d %s, want 429", r.status, r.body)
	}
	secs := retryAfter(t, r, limit)
	v := r.json(t)
	desc, _ := v["error_description"].(string)
	if v["error"] != "slow_down" || !strings.HasSuffix(desc, "retry in "+strconv.Itoa(secs)+" seconds") ||
		r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("device code over the limit: %s, Cache-Control %q", r.body, r.header.Get("Cache-Control"))
	}
}

// wantPageLimited checks a sign-in page refused by a limit of limit per
// minute.
func wantPageLimited(t *testing.T, r response, limit int) {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("sign-in over the limit: %d at %s %s, want 429", r.status, r.url, r.body)
	}
	secs := retryAfter(t, r, limit)
	if !strings.Contains(r.body, "Too many sign-ins were started from your network.") ||
		!strings.Contains(r.body, "Try again in "+strconv.Itoa(secs)+" seconds") {
		t.Errorf("sign-in over the limit: %s", r.body)
	}
}

// TestDeviceCodeStartsAreLimited asks for one device code more than
// SSO_START_LIMIT from one address: the last is 429 slow_down with
// Retry-After and writes no row, while other addresses are unaffected and
// an IPv6 address counts by its /64.
func TestDeviceCodeStartsAreLimited(t *testing.T) {
	const limit = 3
	e := newEnv(t, envOptions{startLimit: limit})
	base, st := e.url(), e.reps[0].st
	for i := range limit {
		if r := deviceCodeFrom(t, base, addrA); r.status != http.StatusOK {
			t.Fatalf("device code %d: %d %s", i+1, r.status, r.body)
		}
	}
	wantRows(t, st, limit, 0)
	wantCodeLimited(t, deviceCodeFrom(t, base, addrA), limit)
	wantRows(t, st, 0, 0)
	if r := deviceCodeFrom(t, base, addrB); r.status != http.StatusOK {
		t.Fatalf("device code from another address: %d %s", r.status, r.body)
	}
	wantRows(t, st, 1, 0)

	for i := range limit {
		if r := deviceCodeFrom(t, base, "2001:db8:1:2::a"); r.status != http.StatusOK {
			t.Fatalf("IPv6 device code %d: %d %s", i+1, r.status, r.body)
		}
	}
	wantCodeLimited(t, deviceCodeFrom(t, base, "2001:db8:1:2::b"), limit)
	if r := deviceCodeFrom(t, base, "2001:db8:1:3::a"); r.status != http.StatusOK {
		t.Fatalf("device code from another /64: %d %s", r.status, r.body)
	}
	wantRows(t, st, limit+1, 0)
}

// TestSignInStartsAreLimited spends an address's starts on a device code,
// the code form's sign-in and the devices page's Sign in button: past
// SSO_START_LIMIT both buttons answer the 429 page with the wait and write
// no session, and so does the device code endpoint; another address signs
// in.
func TestSignInStartsAreLimited(t *testing.T) {
	const limit = 3
	e := newEnv(t, envOptions{startLimit: limit})
	base, st := e.url(), e.reps[0].st
	r := deviceCodeFrom(t, base, addrA)
	if r.status != http.StatusOK {
		t.Fatalf("device code: %d %s", r.status, r.body)
	}
	userCode, _ := r.json(t)["user_code"].(string)
	if page := browserAt(t, addrA).enterCode(base, userCode); page.status != http.StatusOK || !strings.Contains(page.body, "Approve this device?") {
		t.Fatalf("sign-in from the code form: %d %s", page.status, page.body)
	}
	if page := browserAt(t, addrA).signIn(base); page.status != http.StatusOK || !strings.HasSuffix(page.url, "/auth/devices") {
		t.Fatalf("sign-in from the devices page: %d at %s %s", page.status, page.url, page.body)
	}

	logins := e.idp.Logins()
	wantPageLimited(t, browserAt(t, addrA).signIn(base), limit)
	wantPageLimited(t, browserAt(t, addrA).enterCode(base, userCode), limit)
	wantCodeLimited(t, deviceCodeFrom(t, base, addrA), limit)
	if e.idp.Logins() != logins {
		t.Errorf("refused sign-ins reached the provider")
	}
	if page := browserAt(t, addrB).signIn(base); page.status != http.StatusOK || !strings.HasSuffix(page.url, "/auth/devices") {
		t.Fatalf("sign-in from another address: %d at %s %s", page.status, page.url, page.body)
	}
	wantRows(t, st, 1, 3)
}

// TestStartLimitAcrossReplicas spends an address's starts on two replicas
// sharing Redis: the limit counts them together.
func TestStartLimitAcrossReplicas(t *testing.T) {
	const limit = 3
	e := newEnv(t, envOptions{postgresURL: teststore.PostgresURL(t), replicas: 2, startLimit: limit})
	a, b := e.reps[0], e.reps[1]
	for i, rep := range []*replica{a, b, a} {
		if r := deviceCodeFrom(t, rep.url, addrA); r.status != http.StatusOK {
			t.Fatalf("device code %d on %s: %d %s", i+1, rep.url, r.status, r.body)
		}
	}
	wantCodeLimited(t, deviceCodeFrom(t, b.url, addrA), limit)
	wantPageLimited(t, browserAt(t, addrA).signIn(a.url), limit)
	if r := deviceCodeFrom(t, b.url, addrB); r.status != http.StatusOK {
		t.Fatalf("device code from another address: %d %s", r.status, r.body)
	}
	wantRows(t, a.st, limit+1, 0)
}

// unreachableLimiter is a Redis limiter whose Redis refuses connections.
func unreachableLimiter(t *testing.T, failOpen bool) ratelimit.Limiter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return ratelimit.NewRedis(c, ratelimit.RedisOptions{FailOpen: failOpen})
}

// TestStartLimiterUnavailable takes Redis away: failing closed, starts are
// refused with 503 and Retry-After and write nothing; failing open
// (REDIS_FAIL_OPEN), they are served without a limit, like the proxy's
// rate limits.
func TestStartLimiterUnavailable(t *testing.T) {
	const limit = 3
	t.Run("closed", func(t *testing.T) {
		e := newEnv(t, envOptions{startLimit: limit, limiter: unreachableLimiter(t, false)})
		base := e.url()
		r := deviceCodeFrom(t, base, addrA)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" || r.json(t)["error"] != "temporarily_unavailable" {
			t.Fatalf("device code: %d Retry-After %q %s, want 503 temporarily_unavailable", r.status, r.header.Get("Retry-After"), r.body)
		}
		page := browserAt(t, addrA).signIn(base)
		if page.status != http.StatusServiceUnavailable || page.header.Get("Retry-After") != "1" || !strings.Contains(page.body, "Try again shortly") {
			t.Fatalf("sign-in: %d Retry-After %q %s, want the 503 page", page.status, page.header.Get("Retry-After"), page.body)
		}
		wantRows(t, e.reps[0].st, 0, 0)
		if !regexp.MustCompile(`device login failed.*rate limiter unavailable`).MatchString(e.logs.String()) {
			t.Errorf("the refusal is not logged:\n%s", e.logs.String())
		}
	})
	t.Run("open", func(t *testing.T) {
		e := newEnv(t, envOptions{startLimit: limit, limiter: unreachableLimiter(t, true)})
		for i := range limit + 1 {
			if r := deviceCodeFrom(t, e.url(), addrA); r.status != http.StatusOK {
				t.Fatalf("device code %d: %d %s", i+1, r.status, r.body)
			}
		}
		wantRows(t, e.reps[0].st, limit+1, 0)
	})
}

// TestStartLimitZeroIsOff sets SSO_START_LIMIT=0: the limiter is never
// asked (one that cannot decide refuses nothing) and starts are unlimited.
func TestStartLimitZeroIsOff(t *testing.T) {
	e := newEnv(t, envOptions{startLimit: 0, limiter: unreachableLimiter(t, false)})
	const starts = 25 // more than the default SSO_START_LIMIT
	for i := range starts {
		if r := deviceCodeFrom(t, e.url(), addrA); r.status != http.StatusOK {
			t.Fatalf("device code %d: %d %s", i+1, r.status, r.body)
		}
	}
	if page := browserAt(t, addrA).signIn(e.url()); page.status != http.StatusOK {
		t.Fatalf("sign-in: %d %s", page.status, page.body)
	}
	wantRows(t, e.reps[0].st, starts, 1)
}
