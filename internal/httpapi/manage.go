package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// Management API (SPEC §6.2). Handlers parse the request, call Deps.Manager
// and write the JSON view; every call, refused or not, leaves an audit event
// with actor "management".

const (
	auditActor = "management"
	// maxManageBody bounds management request bodies; they are small.
	maxManageBody = 1 << 20
)

// requireManagementToken guards /manage: 404 when no MANAGEMENT_TOKEN is
// configured, 401 (and a "manage.auth" audit event) unless the request
// carries "Authorization: Bearer <MANAGEMENT_TOKEN>" (see bearerMatches).
// Wrong tokens count against the client's address like the proxy's failed
// authentications: past AUTH_FAILURE_LIMIT a minute they get 429 and are
// audited as summary rows.
func (s *Server) requireManagementToken(next echo.HandlerFunc) echo.HandlerFunc {
	if s.d.ManagementToken == "" {
		return func(echo.Context) error {
			return &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "management_disabled",
				Message: "the management API is disabled because MANAGEMENT_TOKEN is not set"}
		}
	}
	want := sha256.Sum256([]byte(s.d.ManagementToken))
	return func(c echo.Context) error {
		ok, presented := bearerMatches(c.Request().Header.Get(echo.HeaderAuthorization), want)
		if ok {
			return next(c)
		}
		reason := "invalid management token"
		if !presented {
			reason = "missing bearer token"
		}
		r, ip := c.Request(), c.RealIP()
		retryAfter, blocked := s.d.Failures.Blocked(ip)
		s.d.Failures.Fail(r.Context(), auth.Failure{IP: ip, Method: r.Method, Path: r.URL.Path, Reason: reason,
			RequestID: c.Response().Header().Get(echo.HeaderXRequestID), Actor: auditActor, Action: "manage.auth"})
		if blocked {
			return tooManyFailures(retryAfter)
		}
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="manage"`)
		return &Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_management_token",
			Message: "missing or invalid management token (Authorization: Bearer $MANAGEMENT_TOKEN)"}
	}
}

// bearerMatches reports whether the Authorization header h carries
// "Bearer X" with sha256(X) == want, and whether it carries bearer
// credentials at all. Digests are compared in constant time, so neither the
// content nor the length of the expected token leaks through timing.
func bearerMatches(h string, want [sha256.Size]byte) (ok, presented bool) {
	cred, presented := bearer(h)
	got := sha256.Sum256([]byte(cred))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && presented, presented
}

// bearer extracts the credentials of an "Authorization: Bearer X" header.
func bearer(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

// auditCall is what a handler learns about its call for the audit event.
type auditCall struct {
	projectID string
	tokenID   string
	metadata  map[string]any
}

// audited runs fn and writes the audit event of the call: success, failure
// (a 4xx answer) or error (5xx), with the client-safe reason. Validation
// errors of the manage package become 400s naming the field, a refused
// reactivation of a revoked token a 409.
func (s *Server) audited(c echo.Context, action string, fn func(*auditCall) error) error {
	var call auditCall
	err := fn(&call)
	var ve *manage.ValidationError
	switch {
	case errors.As(err, &ve):
		err = errBadRequest(ve.Field, "%s", ve.Error())
	case errors.Is(err, manage.ErrTokenRevoked):
		err = &Error{Status: http.StatusConflict, Type: "invalid_request_error", Code: "token_revoked", Param: "is_active",
			Message: "the token is revoked and cannot be reactivated; create a new token", Err: err}
	}
	ev := s.auditEvent(c, action)
	ev.ProjectID, ev.TokenID, ev.Metadata = call.projectID, call.tokenID, call.metadata
	ev.Outcome = store.OutcomeSuccess
	if err != nil {
		e := toError(err)
		ev.Outcome, ev.Reason = store.OutcomeFailure, auth.Bound(e.Message, auth.MaxAuditReason)
		if e.Status >= 500 {
			ev.Outcome = store.OutcomeError
		}
	}
	s.d.Manager.Audit(ev)
	return err
}

func (s *Server) auditEvent(c echo.Context, action string) store.AuditEvent {
	r := c.Request()
	return store.AuditEvent{
		Actor:     auditActor,
		Action:    action,
		RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		ClientIP:  c.RealIP(),
		Method:    r.Method,
		Path:      auth.Bound(r.URL.Path, auth.MaxAuditPath),
	}
}

type createProjectBody struct {
	Name       string `json:"name"`
	Provider   string `json:"provider"`
	BaseURL    string `json:"base_url"`
	APIKey     string `json:"api_key"`
	APIVersion string `json:"api_version"`
	RPMLimit   int    `json:"rpm_limit"`
	TPMLimit   int    `json:"tpm_limit"`

	AllowedOrigins  []string `json:"allowed_origins"`
	AllowedModels   []string `json:"allowed_models"`
	CacheTTLSeconds int      `json:"cache_ttl_seconds"`
}

type updateProjectBody struct {
	Name         *string `json:"name"`
	BaseURL      *string `json:"base_url"`
	APIKey       *string `json:"api_key"`
	APIVersion   *string `json:"api_version"`
	IsActive     *bool   `json:"is_active"`
	RPMLimit     *int    `json:"rpm_limit"`
	TPMLimit     *int    `json:"tpm_limit"`
	RevokeTokens *bool   `json:"revoke_tokens"`

	AllowedOrigins  *[]string `json:"allowed_origins"`
	AllowedModels   *[]string `json:"allowed_models"`
	CacheTTLSeconds *int      `json:"cache_ttl_seconds"`
}

type createTokenBody struct {
	ProjectID       string  `json:"project_id"`
	DurationMinutes *int    `json:"duration_minutes"`
	ExpiresAt       *string `json:"expires_at"`
	MaxRequests     *int64  `json:"max_requests"`
	RPMLimit        int     `json:"rpm_limit"`
	TPMLimit        int     `json:"tpm_limit"`
	Label           string  `json:"label"`

	AllowedModels []string `json:"allowed_models"`
}

type updateTokenBody struct {
	IsActive *bool `json:"is_active"`
	// MaxRequests is raw so that null (set unlimited) differs from absent.
	MaxRequests json.RawMessage `json:"max_requests"`
	RPMLimit    *int            `json:"rpm_limit"`
	TPMLimit    *int            `json:"tpm_limit"`
	Label       *string         `json:"label"`

	AllowedModels *[]string `json:"allowed_models"`
}

func (s *Server) listProjects(c echo.Context) error {
	return s.audited(c, "project.list", func(*auditCall) error {
		if err := queryOnly(c, "active", "page", "page_size"); err != nil {
			return err
		}
		var q manage.ProjectQuery
		var err error
		if q.Active, err = queryBool(c, "active"); err != nil {
			return err
		}
		if q.PageQuery, err = queryPage(c); err != nil {
			return err
		}
		l, err := s.d.Manager.ListProjects(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewListView(l, manage.NewProjectView))
	})
}

func (s *Server) createProject(c echo.Context) error {
	return s.audited(c, "project.create", func(call *auditCall) error {
		var b createProjectBody
		if err := decodeBody(c, &b); err != nil {
			return err
		}
		p, err := s.d.Manager.CreateProject(c.Request().Context(), manage.CreateProjectInput{
			Name: b.Name, Provider: b.Provider, BaseURL: b.BaseURL, APIKey: b.APIKey,
			APIVersion: b.APIVersion, RPMLimit: b.RPMLimit, TPMLimit: b.TPMLimit,
			AllowedOrigins: b.AllowedOrigins, AllowedModels: b.AllowedModels, CacheTTLSeconds: b.CacheTTLSeconds,
		})
		if err != nil {
			return err
		}
		call.projectID = p.ID
		return c.JSON(http.StatusCreated, manage.NewProjectView(p))
	})
}

func (s *Server) getProject(c echo.Context) error {
	return s.audited(c, "project.get", func(call *auditCall) error {
		call.projectID = c.Param("id")
		p, err := s.d.Manager.GetProject(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewProjectView(p))
	})
}

func (s *Server) updateProject(c echo.Context) error {
	return s.audited(c, "project.update", func(call *auditCall) error {
		call.projectID = c.Param("id")
		var b updateProjectBody
		if err := decodeBody(c, &b); err != nil {
			return err
		}
		call.metadata = changedFields(b)
		p, err := s.d.Manager.UpdateProject(c.Request().Context(), c.Param("id"), manage.UpdateProjectInput{
			Name: b.Name, BaseURL: b.BaseURL, APIKey: b.APIKey, APIVersion: b.APIVersion, IsActive: b.IsActive,
			RPMLimit: b.RPMLimit, TPMLimit: b.TPMLimit, RevokeTokens: b.RevokeTokens != nil && *b.RevokeTokens,
			AllowedOrigins: b.AllowedOrigins, AllowedModels: b.AllowedModels, CacheTTLSeconds: b.CacheTTLSeconds,
		})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewProjectView(p))
	})
}

func (s *Server) revokeProjectTokens(c echo.Context) error {
	return s.audited(c, "project.revoke_tokens", func(call *auditCall) error {
		call.projectID = c.Param("id")
		n, err := s.d.Manager.RevokeProjectTokens(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		call.metadata = map[string]any{"revoked": n}
		return c.JSON(http.StatusOK, map[string]any{"project_id": c.Param("id"), "revoked": n})
	})
}

func (s *Server) listTokens(c echo.Context) error {
	return s.audited(c, "token.list", func(call *auditCall) error {
		if err := queryOnly(c, "project_id", "active", "page", "page_size"); err != nil {
			return err
		}
		q := manage.TokenQuery{ProjectID: c.QueryParam("project_id")}
		call.projectID = q.ProjectID
		var err error
		if q.Active, err = queryBool(c, "active"); err != nil {
			return err
		}
		if q.PageQuery, err = queryPage(c); err != nil {
			return err
		}
		l, err := s.d.Manager.ListTokens(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewListView(l, manage.NewTokenView))
	})
}

func (s *Server) createToken(c echo.Context) error {
	return s.audited(c, "token.create", func(call *auditCall) error {
		var b createTokenBody
		if err := decodeBody(c, &b); err != nil {
			return err
		}
		call.projectID = b.ProjectID
		in := manage.CreateTokenInput{ProjectID: b.ProjectID, DurationMinutes: b.DurationMinutes,
			MaxRequests: b.MaxRequests, RPMLimit: b.RPMLimit, TPMLimit: b.TPMLimit, Label: b.Label,
			AllowedModels: b.AllowedModels}
		if b.ExpiresAt != nil {
			t, err := time.Parse(time.RFC3339Nano, *b.ExpiresAt)
			if err != nil {
				return errBadRequest("expires_at", "expires_at: must be an RFC 3339 time, e.g. 2030-01-02T15:04:05Z")
			}
			in.ExpiresAt = &t
		}
		ct, err := s.d.Manager.CreateToken(c.Request().Context(), in)
		if err != nil {
			return err
		}
		call.tokenID = ct.Token.ID
		return c.JSON(http.StatusCreated, manage.NewCreatedTokenView(ct))
	})
}

func (s *Server) getToken(c echo.Context) error {
	return s.audited(c, "token.get", func(call *auditCall) error {
		call.tokenID = c.Param("id")
		t, err := s.d.Manager.GetToken(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		call.projectID = t.ProjectID
		return c.JSON(http.StatusOK, manage.NewTokenView(t))
	})
}

func (s *Server) updateToken(c echo.Context) error {
	return s.audited(c, "token.update", func(call *auditCall) error {
		call.tokenID = c.Param("id")
		var b updateTokenBody
		if err := decodeBody(c, &b); err != nil {
			return err
		}
		call.metadata = changedFields(b)
		in := manage.UpdateTokenInput{IsActive: b.IsActive, RPMLimit: b.RPMLimit, TPMLimit: b.TPMLimit, Label: b.Label,
			AllowedModels: b.AllowedModels}
		if len(b.MaxRequests) > 0 {
			var n *int64
			if err := json.Unmarshal(b.MaxRequests, &n); err != nil {
				return errBadRequest("max_requests", "max_requests: must be an integer or null")
			}
			if n == nil {
				n = new(int64)
			}
			in.MaxRequests = n
		}
		t, err := s.d.Manager.UpdateToken(c.Request().Context(), c.Param("id"), in)
		if err != nil {
			return err
		}
		call.projectID = t.ProjectID
		return c.JSON(http.StatusOK, manage.NewTokenView(t))
	})
}

func (s *Server) revokeToken(c echo.Context) error {
	return s.audited(c, "token.revoke", func(call *auditCall) error {
		call.tokenID = c.Param("id")
		t, err := s.d.Manager.RevokeToken(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		call.projectID = t.ProjectID
		return c.NoContent(http.StatusNoContent)
	})
}

func (s *Server) listAgentTokens(c echo.Context) error {
	return s.audited(c, "agent_token.list", func(*auditCall) error {
		if err := queryOnly(c, "email", "active", "page", "page_size"); err != nil {
			return err
		}
		q := manage.AgentTokenQuery{Email: c.QueryParam("email")}
		var err error
		if q.Active, err = queryBool(c, "active"); err != nil {
			return err
		}
		if q.PageQuery, err = queryPage(c); err != nil {
			return err
		}
		l, err := s.d.Manager.ListAgentTokens(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewListView(l, manage.NewAgentTokenView))
	})
}

func (s *Server) revokeAgentToken(c echo.Context) error {
	return s.audited(c, "agent_token.revoke", func(call *auditCall) error {
		call.metadata = map[string]any{"agent_token_id": truncate(c.Param("id"), 64)}
		a, err := s.d.Manager.RevokeAgentToken(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		call.metadata["user_id"] = a.UserID()
		return c.NoContent(http.StatusNoContent)
	})
}

func (s *Server) getUsage(c echo.Context) error {
	return s.audited(c, "usage.query", func(call *auditCall) error {
		if err := queryOnly(c, "project_id", "token_id", "from", "to", "group_by"); err != nil {
			return err
		}
		q := manage.UsageQuery{ProjectID: c.QueryParam("project_id"), TokenID: c.QueryParam("token_id"),
			From: c.QueryParam("from"), To: c.QueryParam("to"), GroupBy: c.QueryParam("group_by")}
		call.projectID, call.tokenID = q.ProjectID, q.TokenID
		r, err := s.d.Manager.Usage(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewUsageView(r))
	})
}

func (s *Server) listAudit(c echo.Context) error {
	return s.audited(c, "audit.list", func(*auditCall) error {
		if err := queryOnly(c, "action", "outcome", "project_id", "token_id", "from", "to", "page", "page_size"); err != nil {
			return err
		}
		q := manage.AuditQuery{Action: c.QueryParam("action"), Outcome: c.QueryParam("outcome"),
			ProjectID: c.QueryParam("project_id"), TokenID: c.QueryParam("token_id"),
			From: c.QueryParam("from"), To: c.QueryParam("to")}
		var err error
		if q.PageQuery, err = queryPage(c); err != nil {
			return err
		}
		l, err := s.d.Manager.ListAudit(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewListView(l, manage.NewAuditView))
	})
}

func (s *Server) getAudit(c echo.Context) error {
	return s.audited(c, "audit.get", func(*auditCall) error {
		ev, err := s.d.Manager.GetAudit(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewAuditView(ev))
	})
}

// decodeBody decodes the JSON object of the request body into dst strictly:
// unknown fields, wrong types, malformed or trailing JSON are 400s naming
// the field where there is one.
func decodeBody(c echo.Context, dst any) error {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, maxManageBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return bodyError(err)
		}
		return errBadRequest("", "request body must hold exactly one JSON object")
	}
	return nil
}

func bodyError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, errBodyTimeout):
		return bodyTimeout(err)
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
			Message: "request body exceeds " + strconv.Itoa(maxManageBody) + " bytes"}
	case errors.Is(err, io.EOF):
		return errBadRequest("", "request body must be a JSON object")
	case errors.As(err, &se):
		return errBadRequest("", "malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errBadRequest("", "malformed JSON: unexpected end of body")
	case errors.As(err, &ute):
		if ute.Field == "" {
			return errBadRequest("", "request body must be a JSON object")
		}
		return errBadRequest(ute.Field, "%s: must be %s", ute.Field, jsonKind(ute.Type))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if uq, uerr := strconv.Unquote(name); uerr == nil {
			name = uq
		}
		return errBadRequest(name, "unknown field %q", name)
	}
	return errBadRequest("", "invalid JSON body")
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "a JSON " + t.Kind().String()
	}
}

// changedFields lists the JSON names of the fields a PATCH body set, for the
// audit metadata (never their values: one of them may be an API key).
func changedFields(body any) map[string]any {
	v := reflect.ValueOf(body)
	var names []string
	for i := range v.NumField() {
		f := v.Field(i)
		if (f.Kind() == reflect.Pointer || f.Kind() == reflect.Slice) && !f.IsNil() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			names = append(names, name)
		}
	}
	return map[string]any{"fields": names}
}

// queryOnly refuses query parameters outside allowed, naming them, and any
// parameter given more than once: a misspelt filter would otherwise be
// ignored and the answer cover everything, and a repeated one could be read
// as either value.
func queryOnly(c echo.Context, allowed ...string) error {
	var unknown []string
	for name, values := range c.QueryParams() {
		if !slices.Contains(allowed, name) {
			unknown = append(unknown, name)
			continue
		}
		if len(values) > 1 {
			return errBadRequest(name, "%s: given %d times; give it once", name, len(values))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	shown := make([]string, 0, maxNamesShown)
	for _, name := range unknown[:min(len(unknown), maxNamesShown)] {
		shown = append(shown, strconv.Quote(truncate(name, 64)))
	}
	more := ""
	if len(unknown) > maxNamesShown {
		more = fmt.Sprintf(" and %d more", len(unknown)-maxNamesShown)
	}
	return errBadRequest(truncate(unknown[0], 64), "unknown query parameter %s%s (accepted: %s)",
		strings.Join(shown, ", "), more, strings.Join(allowed, ", "))
}

// maxNamesShown bounds how many unknown parameter names an error repeats.
const maxNamesShown = 5

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// queryPage reads page and page_size; the Manager applies defaults and
// bounds, so an explicit 0 is refused here, where it can still be told from
// an absent parameter.
func queryPage(c echo.Context) (manage.PageQuery, error) {
	var q manage.PageQuery
	var err error
	if q.Page, err = queryInt(c, "page"); err != nil {
		return q, err
	}
	if q.Page == 0 && c.QueryParam("page") != "" {
		return q, errBadRequest("page", "page: must be at least 1")
	}
	if q.PageSize, err = queryInt(c, "page_size"); err != nil {
		return q, err
	}
	if q.PageSize == 0 && c.QueryParam("page_size") != "" {
		return q, errBadRequest("page_size", "page_size: must be between 1 and %d", manage.MaxPageSize)
	}
	return q, nil
}

func queryInt(c echo.Context, name string) (int, error) {
	s := c.QueryParam(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errBadRequest(name, "%s: must be an integer", name)
	}
	return n, nil
}

func queryBool(c echo.Context, name string) (*bool, error) {
	s := c.QueryParam(name)
	if s == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return nil, errBadRequest(name, "%s: must be true or false", name)
	}
	return &b, nil
}
