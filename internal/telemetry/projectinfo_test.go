package telemetry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// scrape returns the text /metrics body of h.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestTokensAreLabelledByProjectIDNotName(t *testing.T) {
	m := NewMetrics()
	m.AddTokens("gpt-4o-mini", "0197a000-0000-7000-8000-000000000001", 3, 5)
	body := scrape(t, m.Handler(nil))
	for _, want := range []string{
		`llm_tokens_total{kind="prompt",model="gpt-4o-mini",project_id="0197a000-0000-7000-8000-000000000001"} 3`,
		`llm_tokens_total{kind="completion",model="gpt-4o-mini",project_id="0197a000-0000-7000-8000-000000000001"} 5`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, grep(body, "llm_tokens_total"))
		}
	}
	if strings.Contains(body, "llm_project_info{") {
		t.Errorf("llm_project_info served without being asked for:\n%s", grep(body, "llm_project_info"))
	}
}

func TestProjectInfoMapsIDsToNames(t *testing.T) {
	m := NewMetrics()
	names := func(context.Context) (map[string]string, error) {
		return map[string]string{"id-1": "alpha", "id-2": `team "b"`}, nil
	}
	body := scrape(t, m.Handler(names))
	for _, want := range []string{
		`llm_project_info{name="alpha",project_id="id-1"} 1`,
		`llm_project_info{name="team \"b\"",project_id="id-2"} 1`,
		`llm_project_info_errors_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, grep(body, "llm_project_info"))
		}
	}
}

func TestProjectInfoIsCachedAndSurvivesFailedListings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		var fail error
		names := func(ctx context.Context) (map[string]string, error) {
			calls++
			if _, ok := ctx.Deadline(); !ok {
				t.Error("listing without a deadline")
			}
			if fail != nil {
				return nil, fail
			}
			return map[string]string{"id-1": "alpha"}, nil
		}
		h := NewMetrics().Handler(names)
		scrape(t, h)
		scrape(t, h)
		if calls != 1 {
			t.Fatalf("two scrapes within %s listed projects %d times, want 1", projectInfoTTL, calls)
		}

		time.Sleep(projectInfoTTL)
		fail = errors.New("database unreachable")
		body := scrape(t, h)
		if calls != 2 {
			t.Fatalf("a scrape after %s listed projects %d times in all, want 2", projectInfoTTL, calls)
		}
		for _, want := range []string{`llm_project_info{name="alpha",project_id="id-1"} 1`, `llm_project_info_errors_total 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("after a failed listing the scrape lacks %s:\n%s", want, grep(body, "llm_project_info"))
			}
		}
		scrape(t, h)
		if calls != 2 {
			t.Errorf("a failed listing was retried within %s (%d listings)", projectInfoTTL, calls)
		}
	})
}

func TestProjectInfoLeavesOutNamesThatAreNotLabelValues(t *testing.T) {
	names := func(context.Context) (map[string]string, error) {
		return map[string]string{"id-1": "ok", "id-2": "bad\xff"}, nil
	}
	body := scrape(t, NewMetrics().Handler(names))
	if !strings.Contains(body, `llm_project_info{name="ok",project_id="id-1"} 1`) || strings.Contains(body, "id-2") {
		t.Errorf("want only the valid name:\n%s", grep(body, "llm_project_info"))
	}
}

func TestDependencyUp(t *testing.T) {
	m := NewMetrics()
	m.SetDependencyUp("database", true)
	m.SetDependencyUp("redis", false)
	body := scrape(t, m.Handler(nil))
	for _, want := range []string{`llm_dependency_up{dependency="database"} 1`, `llm_dependency_up{dependency="redis"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, grep(body, "llm_dependency_up"))
		}
	}
}

// grep returns the lines of body that contain s.
func grep(body, s string) string {
	var out []string
	for line := range strings.Lines(body) {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}
