package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// routes lists the whole HTTP surface (SPEC §6).
func (s *Server) routes() {
	e := s.e
	e.Use(requestID, s.track, s.traceRequests, s.observe, s.recoverPanics, s.boundRequest)

	for _, p := range []string{"/healthz", "/live"} {
		e.GET(p, s.live)
		e.HEAD(p, s.live)
	}
	ready := s.newReadiness()
	for _, p := range []string{"/readyz", "/ready", "/health"} {
		e.GET(p, ready.serve)
		e.HEAD(p, ready.serve)
	}
	e.GET("/metrics", s.metricsHandler())

	e.Any("/v1/*", s.proxy)

	m := e.Group("/manage", s.requireManagementToken)
	m.GET("/projects", s.listProjects)
	m.POST("/projects", s.createProject)
	m.GET("/projects/:id", s.getProject)
	m.PATCH("/projects/:id", s.updateProject)
	m.DELETE("/projects/:id", methodNotAllowed("projects cannot be deleted; deactivate with PATCH {\"is_active\": false}"))
	m.POST("/projects/:id/tokens/revoke", s.revokeProjectTokens)
	m.GET("/tokens", s.listTokens)
	m.POST("/tokens", s.createToken)
	m.GET("/tokens/:id", s.getToken)
	m.PATCH("/tokens/:id", s.updateToken)
	m.DELETE("/tokens/:id", s.revokeToken)
	m.GET("/usage", s.getUsage)
	m.GET("/audit", s.listAudit)
	m.GET("/audit/:id", s.getAudit)

	if s.d.Console != nil {
		s.d.Console.Routes(e.Group("/console"))
	}
	m.GET("/agent-tokens", s.listAgentTokens)
	m.DELETE("/agent-tokens/:id", s.revokeAgentToken)

	// SSO device login (SPEC §6.5); without SSO_ISSUER these paths are 404.
	if sso := s.d.SSO; sso != nil {
		e.POST("/auth/device/code", sso.DeviceCode)
		e.POST("/auth/device/token", sso.DeviceToken)
		e.GET("/auth/device", sso.EnterCode)
		e.POST("/auth/device", sso.SubmitCode)
		e.GET("/auth/callback", sso.Callback)
		e.GET("/auth/device/approve", sso.ApprovePage)
		e.POST("/auth/device/approve", sso.Decide)
		e.GET("/auth/devices", sso.Devices)
		e.POST("/auth/devices/signin", sso.SignIn)
		e.POST("/auth/devices/:id/revoke", sso.RevokeDevice)
	}
	m.GET("/memory/projects", s.listMemoryProjects)
	m.GET("/memory/summaries", s.listMemorySummaries)
	m.GET("/memory/summaries/:id", s.getMemorySummary)
	m.DELETE("/memory/summaries/:id", s.deleteMemorySummary)
	m.DELETE("/memory/sessions/:id", s.deleteMemorySession)
}

func methodNotAllowed(msg string) echo.HandlerFunc {
	return func(echo.Context) error {
		return &Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed", Message: msg}
	}
}
