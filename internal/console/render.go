package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmproxy/llm-proxy/internal/store"
)

//go:embed assets/*.css assets/*.js assets/vendor/*
var assetFS embed.FS

// asset is one embedded file, served as is or gzip-compressed.
type asset struct {
	body, gz    []byte
	contentType string
	version     string // first 12 hex digits of the SHA-256 of body
}

type assetSet struct {
	byName map[string]*asset
}

// loadAssets reads and compresses every embedded asset once.
func loadAssets() (*assetSet, error) {
	set := &assetSet{byName: map[string]*asset{}}
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ext := path.Ext(p)
		if ext != ".js" && ext != ".css" {
			return nil // licences are in the repository, not served
		}
		body, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if _, err := zw.Write(body); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		set.byName[path.Base(p)] = &asset{body: body, gz: buf.Bytes(), contentType: mime.TypeByExtension(ext),
			version: hex.EncodeToString(sum[:6])}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: load assets: %w", err)
	}
	return set, nil
}

// url is the address of the named asset, versioned by its content so that
// it can be cached for good.
func (s *assetSet) url(name string) (string, error) {
	a, ok := s.byName[name]
	if !ok {
		return "", fmt.Errorf("console: no asset %q", name)
	}
	return "/console/assets/" + name + "?v=" + a.version, nil
}

// asset serves an embedded asset, gzip-compressed when the browser takes
// it; a request for the current version may be cached for a year.
func (cn *Console) asset(c echo.Context) error {
	a, ok := cn.assets.byName[c.Param("name")]
	if !ok {
		return &pageError{status: http.StatusNotFound, msg: "not found"}
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, a.contentType)
	h.Set("Vary", "Accept-Encoding")
	if c.QueryParam("v") == a.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if strings.Contains(c.Request().Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		return c.Blob(http.StatusOK, a.contentType, a.gz)
	}
	return c.Blob(http.StatusOK, a.contentType, a.body)
}

// pageNames are the templates/*.html files that are whole pages; each
// defines "title" and "content" for layout.html.
var pageNames = []string{"signin", "signed_in", "error", "projects", "project", "tokens", "token_created", "usage", "audit", "audit_event", "devices", "memory", "cluster"}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parse %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"timep": func(t *time.Time) string {
		if t == nil {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"limit": func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return fmt.Sprint(n)
	},
	"maxreq": func(n *int64) string {
		if n == nil {
			return "unlimited"
		}
		return fmt.Sprint(*n)
	},
	"durations": func() any { return durations },
	"join":      func(v []string) string { return strings.Join(v, "\n") },
	"list": func(v []string) string {
		if len(v) == 0 {
			return "—"
		}
		return strings.Join(v, ", ")
	},
}

// view is what layout.html renders: the page's data under Page.
type view struct {
	Nav      string
	SignedIn bool
	Email    string // who signed in by SSO; "" for the management token
	CSRF     string
	CSS, JS  []string
	Page     any
}

// pageNav maps pages to the navigation entry they highlight.
var pageNav = map[string]string{
	"projects": "projects", "project": "projects", "tokens": "tokens", "token_created": "tokens",
	"usage": "usage", "audit": "audit", "audit_event": "audit", "devices": "devices", "memory": "memory", "cluster": "cluster",
}

// render writes the named page with status. Pages are never cached: they
// may show a token secret or the state of a session.
func (cn *Console) render(c echo.Context, status int, name string, page any) error {
	t := cn.pages[name]
	v := view{Nav: pageNav[name], Page: page}
	if s := currentSession(c); s != nil {
		v.SignedIn, v.CSRF = true, s.csrf
		if s.method == store.SessionMethodSSO {
			v.Email = s.subject
		}
	}
	for _, a := range []string{"console.css"} {
		u, err := cn.assets.url(a)
		if err != nil {
			return err
		}
		v.CSS = append(v.CSS, u)
	}
	scripts := []string{"htmx-2.0.11.min.js", "console.js"}
	if name == "usage" {
		css, err := cn.assets.url("uplot-1.6.32.min.css")
		if err != nil {
			return err
		}
		v.CSS = append(v.CSS, css)
		scripts = []string{"htmx-2.0.11.min.js", "uplot-1.6.32.iife.min.js", "console.js"}
	}
	for _, a := range scripts {
		u, err := cn.assets.url(a)
		if err != nil {
			return err
		}
		v.JS = append(v.JS, u)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.HTMLBlob(status, buf.Bytes())
}

// renderPartial writes one named template of a page (an htmx swap).
func (cn *Console) renderPartial(c echo.Context, page, tmpl string, data any) error {
	var buf bytes.Buffer
	if err := cn.pages[page].ExecuteTemplate(&buf, tmpl, data); err != nil {
		return fmt.Errorf("render %s/%s: %w", page, tmpl, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.HTMLBlob(http.StatusOK, buf.Bytes())
}
