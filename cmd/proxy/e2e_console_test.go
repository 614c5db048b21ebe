package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// chromiumPath finds Debian's chromium. Without it the browser tests skip,
// except under CI=true, where they fail (.ci/test installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: CI needs it for the console's browser tests (.ci/test installs it)")
	}
	t.Skip("chromium is not installed; the console's browser tests need it (apt-get install chromium)")
	return ""
}

// artifactDir is where a test saves its screenshots, a new directory
// under $TEST_ARTIFACTS that is kept after the test so the pictures can be
// looked at; "" (no screenshots) when TEST_ARTIFACTS is unset.
func artifactDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TEST_ARTIFACTS")
	if base == "" {
		return ""
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// browserContext starts a fresh headless Chromium for the test. The flags
// that stop background networking keep it from hanging on a closed network.
func browserContext(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// shoot checks that the current page does not scroll sideways at desktop
// width or at 390 px (a phone): wide tables scroll inside their own box.
// With a dir, it saves a full-page screenshot at each width there.
func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	for _, w := range []struct {
		suffix        string
		width, height int64
	}{{"desktop", 1280, 900}, {"390", 390, 844}} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(w.width, w.height, chromedp.EmulateScale(1))); err != nil {
			t.Fatalf("viewport %s: %v", w.suffix, err)
		}
		// Charts follow their box's width once the new layout is done.
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.documentElement.scrollWidth <= window.innerWidth + 1`,
			chromedp.WithPollingTimeout(5*time.Second))); err != nil {
			wide, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName + "#" + e.id + "." + e.className + ":" + Math.round(e.getBoundingClientRect().right)).join(", ")`))
			t.Errorf("%s scrolls sideways at %d px (%s): %v", name, w.width, wide, err)
		}
		if dir == "" {
			continue
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+w.suffix+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// TestConsoleInBrowser walks the console in headless Chromium: sign in,
// create a project and a token, send a request through the proxy with the
// token, find it in the usage chart and table and the audit list, revoke
// the token, sign out; with screenshots of every page at desktop and phone
// width.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browserContext(t)
	shots := artifactDir(t)
	up := newFakeUpstream(t)
	p := startProxy(t, t.TempDir(), "MANAGEMENT_TOKEN="+mgmtToken, "CONSOLE_ENABLED=true", "USAGE_FLUSH_INTERVAL=100ms")
	base := p.addr + "/console"

	// Sign in.
	do(t, ctx, "open the console", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	shoot(t, ctx, shots, "01-signin")
	do(t, ctx, "sign in with a wrong token",
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.Click(chromedp.CSS(`form[action="/console/signin"] button`)),
		chromedp.WaitVisible(chromedp.ID("signin-error")))
	do(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.ID("token"), mgmtToken),
		chromedp.Click(chromedp.CSS(`form[action="/console/signin"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`nav[aria-label="Console"]`)))

	// Create a project.
	do(t, ctx, "open projects", chromedp.Navigate(base+"/projects"), chromedp.WaitVisible(chromedp.ID("p-name")))
	do(t, ctx, "create a project with a bad base URL",
		chromedp.SendKeys(chromedp.ID("p-name"), "browser-e2e"),
		chromedp.SetValue(chromedp.ID("p-base"), "ftp://nowhere"),
		chromedp.SendKeys(chromedp.ID("p-key"), upstreamKey),
		chromedp.Submit(chromedp.ID("p-name")),
		chromedp.WaitVisible(chromedp.ID("project-error")))
	if msg := text(t, ctx, "#project-error"); !strings.Contains(msg, "base_url: must be an absolute http or https URL") {
		t.Fatalf("validation message %q, want the API's", msg)
	}
	shoot(t, ctx, shots, "02-projects-error")
	do(t, ctx, "create a project",
		chromedp.SetValue(chromedp.ID("p-base"), up.URL+"/v1"),
		chromedp.SendKeys(chromedp.ID("p-key"), upstreamKey),
		chromedp.Submit(chromedp.ID("p-name")),
		chromedp.WaitVisible(chromedp.CSS(".alert.ok")))
	if msg := text(t, ctx, ".alert.ok"); msg != "Project created." {
		t.Fatalf("after create: %q", msg)
	}
	shoot(t, ctx, shots, "03-project")
	do(t, ctx, "list projects", chromedp.Navigate(base+"/projects"), chromedp.WaitVisible(chromedp.CSS(`td a[href^="/console/projects/"]`)))
	shoot(t, ctx, shots, "04-projects")

	// Create a token; its secret is shown once, with a copy button.
	do(t, ctx, "open tokens", chromedp.Navigate(base+"/tokens"), chromedp.WaitVisible(chromedp.ID("t-label")))
	do(t, ctx, "create a token",
		chromedp.SendKeys(chromedp.ID("t-label"), "browser token"),
		chromedp.Submit(chromedp.ID("t-label")),
		chromedp.WaitVisible(chromedp.ID("secret")))
	secret, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("secret")))
	if err != nil || !strings.HasPrefix(secret, "sk-") {
		t.Fatalf("token secret %q, err %v", secret, err)
	}
	tokenID := text(t, ctx, ".facts dd code")
	do(t, ctx, "copy the secret", chromedp.Click(chromedp.CSS(`button[data-copy="secret"]`)))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("copy-status").textContent === "Copied to the clipboard."`)); err != nil {
		t.Fatalf("copy: %v", err)
	}
	shoot(t, ctx, shots, "05-token-created")

	// A request through the proxy with the new token.
	status := proxiedChat(t, p.addr, secret)
	if status != http.StatusOK {
		t.Fatalf("proxied request: status %d", status)
	}
	waitFor(t, 10*time.Second, "the usage row", func() bool {
		var u struct {
			Data []struct{ Requests int } `json:"data"`
		}
		return call(t, http.MethodGet, p.addr+"/manage/usage", mgmtToken, nil, &u) == http.StatusOK &&
			len(u.Data) == 1 && u.Data[0].Requests == 1
	})

	// Usage: the chart and the table show it.
	do(t, ctx, "open usage", chromedp.Navigate(base+"/usage?range=24h&by=model"),
		chromedp.WaitVisible(chromedp.CSS("#chart-requests canvas")),
		chromedp.WaitVisible(chromedp.CSS("#chart-tokens canvas")))
	if row := text(t, ctx, "#usage-table tbody tr"); !strings.Contains(row, "gpt-4o-mini") || !strings.Contains(row, "1") {
		t.Fatalf("usage table row %q, want gpt-4o-mini with 1 request", row)
	}
	series, err := chromedp.Run(ctx, chromedp.Evaluate[int](`JSON.parse(document.getElementById("usage-data").getAttribute("data-chart")).series.filter(s => s.label === "gpt-4o-mini" && s.requests.reduce((a, b) => a + b, 0) === 1).length`))
	if err != nil || series != 1 {
		t.Fatalf("chart series for gpt-4o-mini with one request: %d, %v", series, err)
	}
	legend := text(t, ctx, "#chart-requests .u-legend")
	if !strings.Contains(legend, "gpt-4o-mini") {
		t.Fatalf("chart legend %q lacks the model", legend)
	}
	shoot(t, ctx, shots, "06-usage")
	do(t, ctx, "switch the range with htmx",
		chromedp.SetValue(chromedp.ID("u-range"), "90d"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("u-range").dispatchEvent(new Event("change", {bubbles: true}))`))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`location.search.includes("range=90d") && document.querySelector("#chart-requests canvas") !== null`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[typeof htmx, location.href, !!document.getElementById("usage-data"), document.getElementById("chart-requests").innerHTML.length, document.querySelectorAll("#usage-panel").length].join(" | ")`))
		t.Fatalf("the chart after the htmx swap: %v (page: %s)", err, state)
	}

	// Audit: the console's actions are there, by actor console.
	do(t, ctx, "open audit", chromedp.Navigate(base+"/audit?action=token.create"), chromedp.WaitVisible(chromedp.ID("audit")))
	if row := text(t, ctx, "#audit tbody tr"); !strings.Contains(row, "token.create") || !strings.Contains(row, "console") || !strings.Contains(row, "success") {
		t.Fatalf("audit row %q, want a successful token.create by console", row)
	}
	shoot(t, ctx, shots, "07-audit")
	do(t, ctx, "open an audit event", chromedp.Click(chromedp.CSS("#audit tbody tr a")), chromedp.WaitVisible(chromedp.CSS(".facts")))
	if body := text(t, ctx, "main"); !strings.Contains(body, tokenID) {
		t.Fatalf("audit event page lacks the token id %s:\n%s", tokenID, body)
	}
	shoot(t, ctx, shots, "08-audit-event")

	do(t, ctx, "open devices", chromedp.Navigate(base+"/devices"), chromedp.WaitVisible(chromedp.ID("devices")))
	shoot(t, ctx, shots, "09-devices")
	do(t, ctx, "open memory", chromedp.Navigate(base+"/memory"), chromedp.WaitVisible(chromedp.ID("summaries")))
	shoot(t, ctx, shots, "09-memory")
	do(t, ctx, "open cluster", chromedp.Navigate(base+"/cluster"), chromedp.WaitVisible(chromedp.CSS("main table")))
	if body := text(t, ctx, "main"); !strings.Contains(body, "Database schema: version") || !strings.Contains(body, "database_connections_total") {
		t.Fatalf("cluster page lacks the schema version or the pool figures:\n%s", body)
	}
	shoot(t, ctx, shots, "09-cluster")

	// Revoke the token (htmx swaps its row after the confirmation).
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	row := "#token-" + tokenID
	do(t, ctx, "revoke the token", chromedp.Navigate(base+"/tokens"),
		chromedp.WaitVisible(chromedp.CSS(row+" button.danger")),
		chromedp.Click(chromedp.CSS(row+" button.danger")),
		chromedp.WaitVisible(chromedp.CSS(row+" .badge.off")))
	shoot(t, ctx, shots, "10-tokens")
	if status := proxiedChat(t, p.addr, secret); status != http.StatusUnauthorized {
		t.Fatalf("request with the revoked token: status %d, want 401", status)
	}

	// Sign out: the session is gone.
	do(t, ctx, "sign out", chromedp.Click(chromedp.CSS(`form[action="/console/signout"] button`)),
		chromedp.WaitVisible(chromedp.ID("token")))
	if msg := text(t, ctx, "main .alert"); msg != "You are signed out." {
		t.Fatalf("after sign-out: %q", msg)
	}
	shoot(t, ctx, shots, "11-signed-out")
	do(t, ctx, "projects after sign-out", chromedp.Navigate(base+"/projects"), chromedp.WaitVisible(chromedp.ID("token")))
}

// proxiedChat sends one chat completion through the proxy with token and returns
// the status.
func proxiedChat(t *testing.T, addr, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// consoleClient is a cookie-keeping HTTP client for the console that does
// not follow redirects.
func consoleClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func consoleGet(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConsoleSessionAcrossReplicas signs in on one replica and uses the
// cookie on another sharing the PostgreSQL database; a replica started
// with a rotated MANAGEMENT_TOKEN refuses it.
func TestConsoleSessionAcrossReplicas(t *testing.T) {
	t.Parallel()
	db := teststore.PostgresURL(t)
	env := []string{"DATABASE_URL=" + db, "ENCRYPTION_KEY=" + testEncryptionKey, "CONSOLE_ENABLED=true"}
	a := startProxy(t, t.TempDir(), append(env, "MANAGEMENT_TOKEN="+mgmtToken)...)
	b := startProxy(t, t.TempDir(), append(env, "MANAGEMENT_TOKEN="+mgmtToken, "DATABASE_AUTO_MIGRATE=false")...)
	rotated := startProxy(t, t.TempDir(), append(env, "MANAGEMENT_TOKEN="+mgmtToken+"-new", "DATABASE_AUTO_MIGRATE=false")...)

	c := consoleClient()
	m := csrfField.FindStringSubmatch(consoleGet(t, c, a.addr+"/console/signin"))
	if m == nil {
		t.Fatal("no sign-in form on replica a")
	}
	resp, err := c.PostForm(a.addr+"/console/signin", url.Values{"csrf": {m[1]}, "token": {mgmtToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in on a: status %d", resp.StatusCode)
	}
	au, _ := url.Parse(a.addr + "/console/")
	cookies := c.Jar.Cookies(au)

	// The cookie from a works on b (another process, the same database).
	onB := consoleClient()
	bu, _ := url.Parse(b.addr + "/console/")
	onB.Jar.SetCookies(bu, cookies)
	page := consoleGet(t, onB, b.addr+"/console/projects")
	if !strings.Contains(page, "Sign out") {
		t.Fatalf("replica b does not accept replica a's session:\n%s", page)
	}
	// A form posted on b with the CSRF token of the page a served works too.
	csrf := csrfField.FindStringSubmatch(consoleGet(t, c, a.addr+"/console/projects"))[1]
	resp, err = onB.PostForm(b.addr+"/console/projects", url.Values{"csrf": {csrf}, "name": {"made-on-b"}, "api_key": {"k"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create on b with a's CSRF token: status %d", resp.StatusCode)
	}

	// A replica with a rotated management token ends the session for all.
	onRotated := consoleClient()
	ru, _ := url.Parse(rotated.addr + "/console/")
	onRotated.Jar.SetCookies(ru, cookies)
	page = consoleGet(t, onRotated, rotated.addr+"/console/projects")
	if strings.Contains(page, "Sign out") || !strings.Contains(page, "management token has changed") {
		t.Fatalf("the rotated replica accepted the old session:\n%s", page)
	}
	if page := consoleGet(t, c, a.addr+"/console/projects"); strings.Contains(page, "Sign out") {
		t.Fatal("the session still works on replica a after the rotated replica ended it")
	}
}

// TestConsoleDisabled: without CONSOLE_ENABLED, /console is 404.
func TestConsoleDisabled(t *testing.T) {
	t.Parallel()
	p := startProxy(t, t.TempDir(), "MANAGEMENT_TOKEN="+mgmtToken)
	for _, path := range []string{"/console", "/console/", "/console/signin", "/console/assets/console.js"} {
		resp, err := http.Get(p.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without CONSOLE_ENABLED: status %d, want 404", path, resp.StatusCode)
		}
	}
}
