package console_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/console"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// clusterServer is e.server with the replicas listed by replicas and self
// as the replica serving the pages.
func (e *env) clusterServer(t *testing.T, replicas console.Replicas, self string) *httptest.Server {
	t.Helper()
	cn, err := console.New(console.Options{
		Manager: e.manager, Sessions: e.st, Failures: auth.NewFailureLimiter(e.st, e.audit, auth.FailureOptions{Limit: 5}),
		Replicas: replicas, ReplicaID: self, ManagementToken: mgmtToken, SessionIdle: 30 * time.Minute, SessionMax: 12 * time.Hour,
		Now: e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ec := echo.New()
	cn.Routes(ec.Group("/console"))
	srv := httptest.NewServer(ec)
	t.Cleanup(srv.Close)
	return srv
}

var replicaRowRE = regexp.MustCompile(`(?s)<tr[^>]*>.*?</tr>`)

// replicaRows returns the body rows of the page's replicas table.
func replicaRows(t *testing.T, page string) []string {
	t.Helper()
	_, table, ok := strings.Cut(page, `<table id="replicas">`)
	if !ok {
		t.Fatalf("no replicas table in:\n%s", page)
	}
	table, _, _ = strings.Cut(table, "</table>")
	_, body, _ := strings.Cut(table, "<tbody>")
	return replicaRowRE.FindAllString(body, -1)
}

func TestClusterPageListsReplicas(t *testing.T) {
	t.Parallel()
	st := teststore.SQLite(t)
	e := newEnv(t, st)
	now := e.clock.Now()
	for _, r := range []store.Replica{
		{ID: "11111111-aaaa-4000-8000-000000000001", Hostname: "pod-self", Version: "v1.4.0", StartedAt: now.Add(-time.Minute), LastSeenAt: now.Add(-5 * time.Second)},
		{ID: "22222222-aaaa-4000-8000-000000000002", Hostname: `<script>alert(1)</script>`, StartedAt: now.Add(-2 * time.Minute), LastSeenAt: now.Add(-29 * time.Second)},
		{ID: "33333333-aaaa-4000-8000-000000000003", Hostname: "pod-crashed", Version: "v1.3.9", StartedAt: now.Add(-time.Hour), LastSeenAt: now.Add(-31 * time.Second)},
	} {
		if err := st.UpsertReplica(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(t, e.clusterServer(t, st, "11111111-aaaa-4000-8000-000000000001").URL)
	b.signIn(mgmtToken)
	status, page := b.get("/console/cluster")
	if status != http.StatusOK {
		t.Fatalf("cluster page: status %d\n%s", status, page)
	}
	rows := replicaRows(t, page)
	if len(rows) != 3 {
		t.Fatalf("%d replica rows, want 3:\n%s", len(rows), page)
	}
	for i, want := range []struct {
		host, id, version, seen string
		self                    bool
	}{
		{"pod-self", "11111111", "v1.4.0", `<span class="badge ok">live</span>`, true},
		{"&lt;script&gt;alert(1)&lt;/script&gt;", "22222222", "—", `<span class="badge ok">live</span>`, false},
		{"pod-crashed", "33333333", "v1.3.9", `<span class="badge off">gone</span> since ` + now.Add(-31*time.Second).UTC().Format("2006-01-02 15:04:05Z"), false},
	} {
		row := rows[i]
		for _, s := range []string{want.host, ">" + want.id + "</code>", want.version, want.seen} {
			if !strings.Contains(row, s) {
				t.Errorf("row %d lacks %q:\n%s", i, s, row)
			}
		}
		if self := strings.Contains(row, "this&nbsp;replica") && strings.Contains(row, `aria-current="true"`); self != want.self {
			t.Errorf("row %d marked as this replica: %t, want %t:\n%s", i, self, want.self, row)
		}
	}
	if strings.Contains(page, "<script>alert(1)") {
		t.Error("a host name was rendered unescaped")
	}

	// Three heartbeats missed: the first replica is gone too.
	e.clock.Advance(26 * time.Second)
	_, page = b.get("/console/cluster")
	if rows := replicaRows(t, page); !strings.Contains(rows[0], `<span class="badge off">gone</span> since`) {
		t.Errorf("a replica last seen 31 s ago is not shown as gone:\n%s", rows[0])
	}
}

func TestClusterPageBoundsReplicas(t *testing.T) {
	t.Parallel()
	st := teststore.SQLite(t)
	e := newEnv(t, st)
	now := e.clock.Now()
	for i := range 105 {
		at := now.Add(-time.Duration(i) * time.Minute)
		r := &store.Replica{ID: fmt.Sprintf("r%03d", i), Hostname: "crash-loop", StartedAt: at, LastSeenAt: at}
		if err := st.UpsertReplica(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(t, e.clusterServer(t, st, "r000").URL)
	b.signIn(mgmtToken)
	_, page := b.get("/console/cluster")
	if rows := replicaRows(t, page); len(rows) != 100 || !strings.Contains(rows[0], "r000") || !strings.Contains(rows[99], "r099") {
		t.Errorf("%d rows, want the latest started 100", len(rows))
	}
	if !strings.Contains(page, "Only the latest started 100 are shown.") {
		t.Error("the page does not say that replicas were left out")
	}
}

type failingReplicas struct{}

func (failingReplicas) ListReplicas(context.Context, int) ([]*store.Replica, error) {
	return nil, errors.New("database away")
}

// TestClusterPageWithoutReplicas: a list that cannot be read leaves a
// message and the rest of the page.
func TestClusterPageWithoutReplicas(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teststore.SQLite(t))
	b := newBrowser(t, e.clusterServer(t, failingReplicas{}, "").URL)
	b.signIn(mgmtToken)
	status, page := b.get("/console/cluster")
	if status != http.StatusOK || !strings.Contains(page, "The replicas could not be read") || !strings.Contains(page, "This replica's figures") {
		t.Errorf("cluster page with a failing replica list: status %d\n%s", status, page)
	}
}
