package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/manage"
)

// memoryQuery reads the filters and page of a memory list.
func memoryQuery(c echo.Context, params ...string) (manage.MemoryQuery, error) {
	if err := queryOnly(c, append(params, "page", "page_size")...); err != nil {
		return manage.MemoryQuery{}, err
	}
	q := manage.MemoryQuery{UserID: c.QueryParam("user_id"), ProjectID: c.QueryParam("project_id"),
		SessionID: c.QueryParam("session_id")}
	var err error
	q.PageQuery, err = queryPage(c)
	return q, err
}

func (s *Server) listMemoryProjects(c echo.Context) error {
	return s.audited(c, "memory.projects.list", func(*auditCall) error {
		q, err := memoryQuery(c, "user_id")
		if err != nil {
			return err
		}
		l, err := s.d.Manager.ListProjectDirs(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewListView(l, manage.NewProjectDirView))
	})
}

func (s *Server) listMemorySummaries(c echo.Context) error {
	return s.audited(c, "memory.summaries.list", func(*auditCall) error {
		q, err := memoryQuery(c, "user_id", "project_id", "session_id")
		if err != nil {
			return err
		}
		l, err := s.d.Manager.ListSummaries(c.Request().Context(), q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewListView(l, manage.NewSummaryListView))
	})
}

func (s *Server) getMemorySummary(c echo.Context) error {
	return s.audited(c, "memory.summary.get", func(*auditCall) error {
		sum, err := s.d.Manager.GetSummary(c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, manage.NewSummaryView(sum))
	})
}

func (s *Server) deleteMemorySummary(c echo.Context) error {
	return s.audited(c, "memory.summary.delete", func(call *auditCall) error {
		call.metadata = map[string]any{"summary_id": c.Param("id")}
		if err := s.d.Manager.DeleteSummary(c.Request().Context(), c.Param("id")); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})
}

// deleteMemorySession forgets a whole session of a user: its transcript
// and every summary.
func (s *Server) deleteMemorySession(c echo.Context) error {
	return s.audited(c, "memory.session.delete", func(call *auditCall) error {
		if err := queryOnly(c, "user_id"); err != nil {
			return err
		}
		if err := s.d.Manager.DeleteSession(c.Request().Context(), c.QueryParam("user_id"), c.Param("id")); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})
}
