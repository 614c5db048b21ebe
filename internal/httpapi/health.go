package httpapi

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/telemetry"
)

// Pinger is what readiness needs of the database; *postgres.DB and
// *sqlite.DB satisfy it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Readiness is the verdict of a readiness check; a larger value is worse.
type Readiness int

const (
	// Ready means the condition holds.
	Ready Readiness = iota
	// Degraded means a shared dependency is away and this process rides
	// through it (cached tokens, buffered usage, the Redis failure
	// policy). /readyz stays 200 and says "degraded": every replica sees
	// the same outage, and a load balancer that dropped them all would turn
	// a partial outage into a total one (SPEC §6.3).
	Degraded
	// Unready means a reason local to this process, such as a schema behind
	// this build or dirty; /readyz answers 503.
	Unready
)

// ReadyCheck is one condition /readyz reports under Name. Check returns the
// state to show (e.g. "ok", "unreachable") and its verdict; it must return
// soon after ctx ends.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) (state string, r Readiness)
}

// readyTimeout bounds the checks of one /readyz well inside a probe's
// timeout: a dependency that stops answering is then reported as degraded
// instead of making the probe time out, which a kubelet or load balancer
// counts as unready.
const readyTimeout = time.Second

func (s *Server) live(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readiness serves /readyz and remembers each check's last verdict, so that
// a change is logged once and llm_dependency_up follows it.
type readiness struct {
	s      *Server
	checks []ReadyCheck

	mu   sync.Mutex
	last map[string]Readiness
}

// newReadiness puts the database check (when there is a database) before
// Deps.Checks.
func (s *Server) newReadiness() *readiness {
	var checks []ReadyCheck
	if db := s.d.Database; db != nil {
		checks = append(checks, ReadyCheck{Name: "database", Check: func(ctx context.Context) (string, Readiness) {
			if err := db.Ping(ctx); err != nil {
				return "unreachable", Degraded
			}
			return "ok", Ready
		}})
	}
	return &readiness{s: s, checks: append(checks, s.d.Checks...), last: make(map[string]Readiness)}
}

// serve answers whether this replica should get traffic: 200 with status
// "ready" or "degraded", or 503 with "draining" (after SIGTERM) or
// "unavailable" (a check found a local reason). The body always names the
// state of every check. "Not started yet" needs no check: the listener opens
// only once start-up, schema check included, has succeeded. The checks run
// concurrently, within readyTimeout.
func (rd *readiness) serve(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	states := make([]string, len(rd.checks))
	verdicts := make([]Readiness, len(rd.checks))
	var wg sync.WaitGroup
	for i, ch := range rd.checks {
		wg.Go(func() { states[i], verdicts[i] = ch.Check(ctx) })
	}
	wg.Wait()

	body := make(map[string]string, len(rd.checks)+1)
	worst := Ready
	for i, ch := range rd.checks {
		body[ch.Name] = states[i]
		worst = max(worst, verdicts[i])
		rd.note(c, ch.Name, states[i], verdicts[i])
	}
	status, code := "ready", http.StatusOK
	switch {
	case rd.s.draining.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case worst == Unready:
		status, code = "unavailable", http.StatusServiceUnavailable
	case worst == Degraded:
		status = "degraded"
	}
	body["status"] = status
	return c.JSON(code, body)
}

// note exports a check's verdict as llm_dependency_up and logs it when it
// differs from the previous one (or, the first time, when it is not Ready).
func (rd *readiness) note(c echo.Context, name, state string, v Readiness) {
	if m := rd.s.d.Metrics; m != nil {
		m.SetDependencyUp(name, v == Ready)
	}
	rd.mu.Lock()
	prev, seen := rd.last[name]
	rd.last[name] = v
	rd.mu.Unlock()
	if (seen && prev == v) || (!seen && v == Ready) {
		return
	}
	log := rd.s.d.Logger
	args := requestIDs(c, "dependency", name, "state", state)
	switch v {
	case Ready:
		log.Info("dependency recovered", args...)
	case Degraded:
		log.Warn("dependency degraded: serving without it", args...)
	default:
		log.Error("dependency unready: /readyz answers 503", args...)
	}
}

// metricsHandler serves /metrics: 404 without Metrics. With MetricsToken
// set, only to "Authorization: Bearer <METRICS_TOKEN>" (401 otherwise, the
// digests compared in constant time), and then with llm_project_info; the
// project names it holds are never served without the token (SPEC §6.3).
func (s *Server) metricsHandler() echo.HandlerFunc {
	if s.d.Metrics == nil {
		return func(echo.Context) error { return echo.ErrNotFound }
	}
	if s.d.MetricsToken == "" {
		return echo.WrapHandler(s.d.Metrics.Handler(nil))
	}
	var names telemetry.ProjectNames
	if s.d.Manager != nil {
		names = s.d.Manager.ProjectNames
	}
	h := s.d.Metrics.Handler(names)
	want := sha256.Sum256([]byte(s.d.MetricsToken))
	return func(c echo.Context) error {
		if ok, _ := bearerMatches(c.Request().Header.Get(echo.HeaderAuthorization), want); !ok {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="metrics"`)
			return &Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_metrics_token",
				Message: "missing or invalid metrics token (Authorization: Bearer $METRICS_TOKEN)"}
		}
		h.ServeHTTP(c.Response(), c.Request())
		return nil
	}
}
