package console

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/manage"
)

// --- agent-token devices (SPEC §6.5) ---

type devicesPage struct {
	Devices []manage.AgentTokenView
	Email   string
	Active  string
	Notice  string
	Pager   pager
}

func (cn *Console) devices(c echo.Context) error {
	page := devicesPage{Email: strings.TrimSpace(c.QueryParam("email")), Active: c.QueryParam("active")}
	q := manage.AgentTokenQuery{Email: page.Email}
	switch page.Active {
	case "true", "false":
		b := page.Active == "true"
		q.Active = &b
	default:
		page.Active = ""
	}
	var err error
	if q.PageQuery, err = pageQuery(c); err != nil {
		return err
	}
	l, err := cn.o.Manager.ListAgentTokens(c.Request().Context(), q)
	cn.record(c, "agent_token.list", auditCall{}, err)
	if err != nil {
		msg, err := formError(err)
		if err != nil {
			return err
		}
		return &pageError{status: http.StatusBadRequest, msg: msg}
	}
	if c.QueryParam("revoked") == "1" {
		page.Notice = "Device revoked."
	}
	page.Pager = newPager(c, l.Page, l.Total)
	for _, a := range l.Items {
		page.Devices = append(page.Devices, manage.NewAgentTokenView(a))
	}
	return cn.render(c, http.StatusOK, "devices", page)
}

func (cn *Console) revokeDevice(c echo.Context) error {
	id := c.Param("id")
	_, err := cn.o.Manager.RevokeAgentToken(c.Request().Context(), id)
	cn.record(c, "agent_token.revoke", auditCall{metadata: map[string]any{"agent_token_id": truncate(id, 64)}}, err)
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/console/devices?revoked=1")
}

// --- memory summaries (SPEC §6.6) ---

type memoryPage struct {
	Summaries []manage.SummaryView
	Filter    manage.MemoryQuery
	Notice    string
	Pager     pager
}

func (cn *Console) memory(c echo.Context) error {
	q := manage.MemoryQuery{UserID: strings.TrimSpace(c.QueryParam("user_id")),
		ProjectID: strings.TrimSpace(c.QueryParam("project_id")), SessionID: strings.TrimSpace(c.QueryParam("session_id"))}
	var err error
	if q.PageQuery, err = pageQuery(c); err != nil {
		return err
	}
	l, err := cn.o.Manager.ListSummaries(c.Request().Context(), q)
	cn.record(c, "memory.summaries.list", auditCall{}, err)
	if err != nil {
		msg, err := formError(err)
		if err != nil {
			return err
		}
		return &pageError{status: http.StatusBadRequest, msg: msg}
	}
	page := memoryPage{Filter: q, Pager: newPager(c, l.Page, l.Total)}
	if c.QueryParam("deleted") == "1" {
		page.Notice = "Summary deleted."
	}
	for _, s := range l.Items {
		page.Summaries = append(page.Summaries, manage.NewSummaryListView(s))
	}
	return cn.render(c, http.StatusOK, "memory", page)
}

func (cn *Console) deleteSummary(c echo.Context) error {
	id := c.Param("id")
	err := cn.o.Manager.DeleteSummary(c.Request().Context(), id)
	cn.record(c, "memory.summary.delete", auditCall{metadata: map[string]any{"summary_id": truncate(id, 64)}}, err)
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/console/memory?deleted=1")
}

// truncate cuts s to at most n bytes (IDs from a path, for audit metadata).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
