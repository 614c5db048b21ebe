package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

func (s *Server) live(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// ready reports whether this replica should get traffic: not draining, the
// database answers, and the extra checks (Redis) pass; the body names the
// state of each. The schema was
// checked at start-up, before the listener opened.
func (s *Server) ready(c echo.Context) error {
	body := map[string]string{"status": "ready", "database": "ok"}
	status := http.StatusOK
	if s.draining.Load() {
		body["status"], status = "draining", http.StatusServiceUnavailable
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.d.Store.Ping(ctx); err != nil {
		body["status"], body["database"], status = "unavailable", "unreachable", http.StatusServiceUnavailable
	}
	for _, c := range s.d.Checks {
		state, ok := c.Check(ctx)
		body[c.Name] = state
		if !ok {
			body["status"], status = "unavailable", http.StatusServiceUnavailable
		}
	}
	return c.JSON(status, body)
}

func (s *Server) metrics(c echo.Context) error {
	if s.d.Metrics == nil {
		return echo.ErrNotFound
	}
	s.d.Metrics.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}
