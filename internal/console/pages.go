package console

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/manage"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// auditCall is what a handler learns about its action for the audit event.
type auditCall struct {
	projectID string
	tokenID   string
	metadata  map[string]any
}

// record writes the audit event of a console action that ended with err,
// classified as the management API classifies its calls.
func (cn *Console) record(c echo.Context, action string, call auditCall, err error) {
	ev := cn.auditEvent(c, action)
	ev.ProjectID, ev.TokenID, ev.Metadata = call.projectID, call.tokenID, call.metadata
	ev.Outcome, ev.Reason = manage.Outcome(err)
	if msg, ok := userMessage(err); ok {
		ev.Reason = msg
	} else if err != nil {
		ev.Reason = "internal error"
	}
	ev.Reason = auth.Bound(ev.Reason, auth.MaxAuditReason)
	cn.o.Manager.Audit(ev)
}

// userMessage is the management API's message for an error the operator
// can fix, and false for an internal error.
func userMessage(err error) (string, bool) {
	var ve *manage.ValidationError
	switch {
	case err == nil:
		return "", true
	case errors.As(err, &ve):
		return ve.Error(), true
	case errors.Is(err, manage.ErrTokenRevoked):
		return "the token is revoked and cannot be reactivated; create a new token", true
	case errors.Is(err, store.ErrConflict):
		return "conflicts with an existing record", true
	case errors.Is(err, store.ErrNotFound):
		return "not found", true
	}
	return "", false
}

// formError returns the message to show beside a form for err, or err
// itself when it is not the operator's to fix.
func formError(err error) (string, error) {
	if msg, ok := userMessage(err); ok {
		return msg, nil
	}
	return "", err
}

// intField parses an optional integer form field; "" is 0.
func intField(c echo.Context, name string) (int, error) {
	s := strings.TrimSpace(formValue(c, name))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, &manage.ValidationError{Field: name, Message: "must be an integer"}
	}
	return n, nil
}

// listField splits a textarea into entries, one per line or comma.
func listField(c echo.Context, name string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(formValue(c, name), func(r rune) bool { return r == '\n' || r == '\r' || r == ',' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// --- projects ---

type projectsPage struct {
	Projects  []manage.ProjectView
	Providers []string
	Form      projectForm
	Error     string
	Pager     pager
}

// projectForm is the create form's input, shown again after a refusal
// (never the API key).
type projectForm struct {
	Name, Provider, BaseURL, APIVersion string
	RPMLimit, TPMLimit, CacheTTLSeconds string
	AllowedOrigins, AllowedModels       string
}

func (cn *Console) projects(c echo.Context) error {
	return cn.projectsPage(c, http.StatusOK, projectForm{Provider: store.ProviderOpenAI}, "")
}

func (cn *Console) projectsPage(c echo.Context, status int, form projectForm, formErr string) error {
	q, err := pageQuery(c)
	if err != nil {
		return err
	}
	l, err := cn.o.Manager.ListProjects(c.Request().Context(), manage.ProjectQuery{PageQuery: q})
	if status == http.StatusOK {
		cn.record(c, "project.list", auditCall{}, err)
	}
	if err != nil {
		return err
	}
	page := projectsPage{Providers: proxy.Providers, Form: form, Error: formErr,
		Pager: newPager(c, l.Page, l.Total)}
	for _, p := range l.Items {
		page.Projects = append(page.Projects, manage.NewProjectView(p))
	}
	return cn.render(c, status, "projects", page)
}

func (cn *Console) createProject(c echo.Context) error {
	form := projectForm{Name: formValue(c, "name"), Provider: formValue(c, "provider"), BaseURL: formValue(c, "base_url"),
		APIVersion: formValue(c, "api_version"), RPMLimit: formValue(c, "rpm_limit"), TPMLimit: formValue(c, "tpm_limit"),
		CacheTTLSeconds: formValue(c, "cache_ttl_seconds"), AllowedOrigins: formValue(c, "allowed_origins"),
		AllowedModels: formValue(c, "allowed_models")}
	var call auditCall
	p, err := func() (*store.Project, error) {
		in := manage.CreateProjectInput{Name: form.Name, Provider: form.Provider, BaseURL: form.BaseURL,
			APIKey: formValue(c, "api_key"), APIVersion: form.APIVersion,
			AllowedOrigins: listField(c, "allowed_origins"), AllowedModels: listField(c, "allowed_models")}
		var err error
		if in.RPMLimit, err = intField(c, "rpm_limit"); err != nil {
			return nil, err
		}
		if in.TPMLimit, err = intField(c, "tpm_limit"); err != nil {
			return nil, err
		}
		if in.CacheTTLSeconds, err = intField(c, "cache_ttl_seconds"); err != nil {
			return nil, err
		}
		return cn.o.Manager.CreateProject(c.Request().Context(), in)
	}()
	if p != nil {
		call.projectID = p.ID
	}
	cn.record(c, "project.create", call, err)
	if err != nil {
		msg, err := formError(err)
		if err != nil {
			return err
		}
		return cn.projectsPage(c, http.StatusBadRequest, form, msg)
	}
	return c.Redirect(http.StatusSeeOther, "/console/projects/"+url.PathEscape(p.ID)+"?created=1")
}

type projectPage struct {
	Project manage.ProjectView
	Notice  string
	Error   string
}

func (cn *Console) project(c echo.Context) error {
	id := c.Param("id")
	p, err := cn.o.Manager.GetProject(c.Request().Context(), id)
	cn.record(c, "project.get", auditCall{projectID: id}, err)
	if err != nil {
		return err
	}
	page := projectPage{Project: manage.NewProjectView(p)}
	switch {
	case c.QueryParam("created") == "1":
		page.Notice = "Project created."
	case c.QueryParam("saved") == "1":
		page.Notice = "Changes saved."
	case c.QueryParam("revoked") != "":
		page.Notice = "Tokens revoked: " + strconv.Itoa(atoiOr(c.QueryParam("revoked"))) + "."
	}
	return cn.render(c, http.StatusOK, "project", page)
}

func atoiOr(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func (cn *Console) updateProject(c echo.Context) error {
	id := c.Param("id")
	ctx := c.Request().Context()
	in := manage.UpdateProjectInput{}
	fields := []string{"name", "base_url", "rpm_limit", "tpm_limit", "allowed_origins", "allowed_models", "cache_ttl_seconds"}
	_, err := func() (*store.Project, error) {
		name, baseURL := formValue(c, "name"), formValue(c, "base_url")
		origins, models := listField(c, "allowed_origins"), listField(c, "allowed_models")
		in.Name, in.BaseURL, in.AllowedOrigins, in.AllowedModels = &name, &baseURL, &origins, &models
		for _, f := range []struct {
			name string
			dst  **int
		}{{"rpm_limit", &in.RPMLimit}, {"tpm_limit", &in.TPMLimit}, {"cache_ttl_seconds", &in.CacheTTLSeconds}} {
			n, err := intField(c, f.name)
			if err != nil {
				return nil, err
			}
			*f.dst = &n
		}
		if v := formValue(c, "api_version"); v != "" {
			in.APIVersion = &v
			fields = append(fields, "api_version")
		}
		if k := formValue(c, "api_key"); k != "" {
			in.APIKey = &k
			fields = append(fields, "api_key")
		}
		return cn.o.Manager.UpdateProject(ctx, id, in)
	}()
	cn.record(c, "project.update", auditCall{projectID: id, metadata: map[string]any{"fields": fields}}, err)
	if err != nil {
		msg, err := formError(err)
		if err != nil {
			return err
		}
		p, gerr := cn.o.Manager.GetProject(ctx, id)
		if gerr != nil {
			return gerr
		}
		return cn.render(c, http.StatusBadRequest, "project", projectPage{Project: manage.NewProjectView(p), Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/console/projects/"+url.PathEscape(id)+"?saved=1")
}

func (cn *Console) setProjectActive(c echo.Context) error {
	id := c.Param("id")
	active := formValue(c, "active") == "true"
	_, err := cn.o.Manager.UpdateProject(c.Request().Context(), id, manage.UpdateProjectInput{IsActive: &active})
	cn.record(c, "project.update", auditCall{projectID: id, metadata: map[string]any{"fields": []string{"is_active"}}}, err)
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/console/projects/"+url.PathEscape(id)+"?saved=1")
}

func (cn *Console) revokeProjectTokens(c echo.Context) error {
	id := c.Param("id")
	n, err := cn.o.Manager.RevokeProjectTokens(c.Request().Context(), id)
	cn.record(c, "project.revoke_tokens", auditCall{projectID: id, metadata: map[string]any{"revoked": n}}, err)
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/console/projects/"+url.PathEscape(id)+"?revoked="+strconv.FormatInt(n, 10))
}

// --- tokens ---

type tokensPage struct {
	Tokens   []tokenRow
	Projects []manage.ProjectView // active ones, for the create form
	Filter   tokenFilter
	Form     tokenForm
	Error    string
	Pager    pager
	CSRF     string
}

type tokenRow struct {
	Token   manage.TokenView
	Project string
	CSRF    string
}

type tokenFilter struct {
	ProjectID, Active string
}

type tokenForm struct {
	ProjectID, Duration, MaxRequests, RPMLimit, TPMLimit, Label, AllowedModels string
}

// durations are the lifetimes the create form offers, in minutes.
var durations = []struct {
	Minutes int
	Label   string
}{{60, "1 hour"}, {1440, "1 day"}, {10080, "7 days"}, {43200, "30 days"}, {129600, "90 days"}, {525600, "1 year"}}

func (cn *Console) tokens(c echo.Context) error {
	return cn.tokensPage(c, http.StatusOK, tokenForm{Duration: "1440"}, "")
}

func (cn *Console) tokensPage(c echo.Context, status int, form tokenForm, formErr string) error {
	ctx := c.Request().Context()
	f := tokenFilter{ProjectID: c.QueryParam("project_id"), Active: c.QueryParam("active")}
	q := manage.TokenQuery{ProjectID: f.ProjectID}
	switch f.Active {
	case "true", "false":
		b := f.Active == "true"
		q.Active = &b
	default:
		f.Active = ""
	}
	var err error
	if q.PageQuery, err = pageQuery(c); err != nil {
		return err
	}
	l, err := cn.o.Manager.ListTokens(ctx, q)
	if status == http.StatusOK {
		cn.record(c, "token.list", auditCall{projectID: f.ProjectID}, err)
	}
	if err != nil {
		return err
	}
	names, projects, err := cn.projectNames(c)
	if err != nil {
		return err
	}
	s := currentSession(c)
	page := tokensPage{Filter: f, Form: form, Error: formErr, Pager: newPager(c, l.Page, l.Total), CSRF: s.csrf}
	for _, p := range projects {
		if p.IsActive {
			page.Projects = append(page.Projects, p)
		}
	}
	for _, t := range l.Items {
		page.Tokens = append(page.Tokens, tokenRow{Token: manage.NewTokenView(t), Project: names[t.ProjectID], CSRF: s.csrf})
	}
	return cn.render(c, status, "tokens", page)
}

// projectNames returns the first MaxPageSize projects and their names by
// ID: enough for the menus and labels of one page.
func (cn *Console) projectNames(c echo.Context) (map[string]string, []manage.ProjectView, error) {
	l, err := cn.o.Manager.ListProjects(c.Request().Context(), manage.ProjectQuery{PageQuery: manage.PageQuery{PageSize: manage.MaxPageSize}})
	if err != nil {
		return nil, nil, err
	}
	names := map[string]string{}
	views := make([]manage.ProjectView, 0, len(l.Items))
	for _, p := range l.Items {
		names[p.ID] = p.Name
		views = append(views, manage.NewProjectView(p))
	}
	return names, views, nil
}

type tokenCreatedPage struct {
	Token   manage.CreatedTokenView
	Project string
}

func (cn *Console) createToken(c echo.Context) error {
	form := tokenForm{ProjectID: formValue(c, "project_id"), Duration: formValue(c, "duration_minutes"),
		MaxRequests: formValue(c, "max_requests"), RPMLimit: formValue(c, "rpm_limit"), TPMLimit: formValue(c, "tpm_limit"),
		Label: formValue(c, "label"), AllowedModels: formValue(c, "allowed_models")}
	call := auditCall{projectID: form.ProjectID}
	ct, err := func() (*manage.CreatedToken, error) {
		in := manage.CreateTokenInput{ProjectID: form.ProjectID, Label: form.Label, AllowedModels: listField(c, "allowed_models")}
		if form.Duration != "" {
			d, err := intField(c, "duration_minutes")
			if err != nil {
				return nil, err
			}
			in.DurationMinutes = &d
		}
		if form.MaxRequests != "" {
			n, err := strconv.ParseInt(strings.TrimSpace(form.MaxRequests), 10, 64)
			if err != nil {
				return nil, &manage.ValidationError{Field: "max_requests", Message: "must be an integer"}
			}
			in.MaxRequests = &n
		}
		var err error
		if in.RPMLimit, err = intField(c, "rpm_limit"); err != nil {
			return nil, err
		}
		if in.TPMLimit, err = intField(c, "tpm_limit"); err != nil {
			return nil, err
		}
		return cn.o.Manager.CreateToken(c.Request().Context(), in)
	}()
	if ct != nil {
		call.tokenID = ct.Token.ID
	}
	cn.record(c, "token.create", call, err)
	if err != nil {
		msg, err := formError(err)
		if err != nil {
			return err
		}
		return cn.tokensPage(c, http.StatusBadRequest, form, msg)
	}
	names, _, err := cn.projectNames(c)
	if err != nil {
		return err
	}
	// The secret is in this answer only: not in a URL, not in a redirect.
	return cn.render(c, http.StatusCreated, "token_created", tokenCreatedPage{Token: manage.NewCreatedTokenView(ct), Project: names[ct.Token.ProjectID]})
}

func (cn *Console) revokeToken(c echo.Context) error {
	id := c.Param("id")
	t, err := cn.o.Manager.RevokeToken(c.Request().Context(), id)
	call := auditCall{tokenID: id}
	if t != nil {
		call.projectID = t.ProjectID
	}
	cn.record(c, "token.revoke", call, err)
	if err != nil {
		return err
	}
	if c.Request().Header.Get("HX-Request") == "true" {
		names, _, err := cn.projectNames(c)
		if err != nil {
			return err
		}
		return cn.renderPartial(c, "tokens", "token-row", tokenRow{Token: manage.NewTokenView(t), Project: names[t.ProjectID],
			CSRF: currentSession(c).csrf})
	}
	return c.Redirect(http.StatusSeeOther, "/console/tokens")
}

// --- audit ---

type auditPage struct {
	Events   []manage.AuditView
	Filter   manage.AuditQuery
	Outcomes []string
	Error    string
	Pager    pager
}

func (cn *Console) audit(c echo.Context) error {
	q := manage.AuditQuery{Action: strings.TrimSpace(c.QueryParam("action")), Outcome: c.QueryParam("outcome"),
		ProjectID: strings.TrimSpace(c.QueryParam("project_id")), TokenID: strings.TrimSpace(c.QueryParam("token_id")),
		From: strings.TrimSpace(c.QueryParam("from")), To: strings.TrimSpace(c.QueryParam("to"))}
	page := auditPage{Filter: q, Outcomes: []string{store.OutcomeSuccess, store.OutcomeFailure, store.OutcomeDenied, store.OutcomeError}}
	var err error
	if q.PageQuery, err = pageQuery(c); err != nil {
		return err
	}
	l, err := cn.o.Manager.ListAudit(c.Request().Context(), q)
	cn.record(c, "audit.list", auditCall{}, err)
	if err != nil {
		msg, err := formError(err)
		if err != nil {
			return err
		}
		page.Error = msg
		return cn.render(c, http.StatusBadRequest, "audit", page)
	}
	page.Pager = newPager(c, l.Page, l.Total)
	for _, ev := range l.Items {
		page.Events = append(page.Events, manage.NewAuditView(ev))
	}
	return cn.render(c, http.StatusOK, "audit", page)
}

type auditEventPage struct {
	Event    manage.AuditView
	Metadata string
}

func (cn *Console) auditDetail(c echo.Context) error {
	ev, err := cn.o.Manager.GetAudit(c.Request().Context(), c.Param("id"))
	cn.record(c, "audit.get", auditCall{}, err)
	if err != nil {
		return err
	}
	v := manage.NewAuditView(ev)
	return cn.render(c, http.StatusOK, "audit_event", auditEventPage{Event: v, Metadata: prettyJSON(v.Metadata)})
}

// --- paging ---

// consolePageSize is the rows of a console list page.
const consolePageSize = 50

func pageQuery(c echo.Context) (manage.PageQuery, error) {
	q := manage.PageQuery{PageSize: consolePageSize}
	if s := c.QueryParam("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, &pageError{status: http.StatusBadRequest, msg: "page: must be at least 1"}
		}
		q.Page = n
	}
	return q, nil
}

// pager links to the neighbouring pages of a list, keeping its filters.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string
}

func newPager(c echo.Context, p store.Page, total int) pager {
	pg := pager{Page: p.Page, Total: total, Pages: max(1, (total+p.PageSize-1)/p.PageSize)}
	link := func(n int) string {
		q := c.QueryParams()
		q.Set("page", strconv.Itoa(n))
		return c.Request().URL.Path + "?" + q.Encode()
	}
	if p.Page > 1 {
		pg.Prev = link(p.Page - 1)
	}
	if p.Page < pg.Pages {
		pg.Next = link(p.Page + 1)
	}
	return pg
}
