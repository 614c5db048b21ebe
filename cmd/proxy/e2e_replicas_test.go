package main

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// consoleSignIn signs a new console client in on the proxy at addr with
// the management token.
func consoleSignIn(t *testing.T, addr string) *http.Client {
	t.Helper()
	c := consoleClient()
	m := csrfField.FindStringSubmatch(consoleGet(t, c, addr+"/console/signin"))
	if m == nil {
		t.Fatalf("no sign-in form on %s", addr)
	}
	resp, err := c.PostForm(addr+"/console/signin", url.Values{"csrf": {m[1]}, "token": {mgmtToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in on %s: status %d", addr, resp.StatusCode)
	}
	return c
}

// seenReplica is a row of the cluster page's replicas table.
type seenReplica struct {
	id         string
	live, self bool
}

var (
	replicaRow   = regexp.MustCompile(`(?s)<tr([^>]*)>(.*?)</tr>`)
	replicaTitle = regexp.MustCompile(`<code title="([^"]+)">`)
)

// clusterReplicas reads the replicas table of the cluster page.
func clusterReplicas(t *testing.T, c *http.Client, addr string) []seenReplica {
	t.Helper()
	page := consoleGet(t, c, addr+"/console/cluster")
	_, table, ok := strings.Cut(page, `<table id="replicas">`)
	if !ok {
		t.Fatalf("no replicas table on %s's cluster page:\n%s", addr, page)
	}
	table, _, _ = strings.Cut(table, "</table>")
	_, body, _ := strings.Cut(table, "<tbody>")
	var out []seenReplica
	for _, m := range replicaRow.FindAllStringSubmatch(body, -1) {
		id := replicaTitle.FindStringSubmatch(m[2])
		if id == nil {
			continue // "No replica has announced itself yet."
		}
		out = append(out, seenReplica{id: id[1], live: strings.Contains(m[2], ">live<"), self: strings.Contains(m[1], `aria-current="true"`)})
	}
	return out
}

// TestConsoleReplicas starts two proxies on one PostgreSQL database: each
// one's cluster page lists both, live, and marks itself; once one has shut
// down cleanly, the other's page no longer lists it.
func TestConsoleReplicas(t *testing.T) {
	t.Parallel()
	db := teststore.PostgresURL(t)
	env := []string{"DATABASE_URL=" + db, "ENCRYPTION_KEY=" + testEncryptionKey, "CONSOLE_ENABLED=true", "MANAGEMENT_TOKEN=" + mgmtToken}
	a := startProxy(t, t.TempDir(), env...)
	b := startProxy(t, t.TempDir(), append(env, "DATABASE_AUTO_MIGRATE=false")...)
	onA, onB := consoleSignIn(t, a.addr), consoleSignIn(t, b.addr)

	// Each announces itself as it starts, beside serving.
	var fromA, fromB []seenReplica
	waitFor(t, 10*time.Second, "both replicas on both cluster pages", func() bool {
		fromA, fromB = clusterReplicas(t, onA, a.addr), clusterReplicas(t, onB, b.addr)
		return len(fromA) == 2 && len(fromB) == 2
	})
	self := func(rs []seenReplica) string {
		var id string
		for _, r := range rs {
			if !r.live {
				t.Errorf("replica %s is not live: %+v", r.id, rs)
			}
			if r.self {
				if id != "" {
					t.Errorf("two replicas marked as serving the page: %+v", rs)
				}
				id = r.id
			}
		}
		return id
	}
	idA, idB := self(fromA), self(fromB)
	if idA == "" || idB == "" || idA == idB {
		t.Fatalf("self marks: a %q, b %q; want two different replicas", idA, idB)
	}

	// A clean shutdown deletes b's row before the process ends.
	b.stop(t)
	if b.err != nil {
		t.Fatalf("b stopped with %v\n%s", b.err, b.output.String())
	}
	if got := clusterReplicas(t, onA, a.addr); len(got) != 1 || got[0].id != idA || !got[0].self {
		t.Fatalf("after b's shutdown a lists %+v, want only itself (%s)", got, idA)
	}
}
