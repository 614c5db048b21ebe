package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// timeLayout is how times are stored: UTC, microseconds, fixed width, so
// that string order is time order.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// translate maps driver errors to the store sentinels; it is the only place
// that inspects them.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		}
	}
	return err
}

func timeArg(t time.Time) string { return t.UTC().Format(timeLayout) }

func nullTimeArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return timeArg(*t)
}

// nullIDArg stores an empty optional ID as NULL.
func nullIDArg(id string) any {
	if id == "" {
		return nil
	}
	return id
}

func nullIntArg(n *int64) any {
	if n == nil {
		return nil
	}
	return *n
}

func parseTime(v any) (time.Time, error) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return time.Time{}, fmt.Errorf("scan time: unexpected %T", v)
	}
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("scan time: %w", err)
	}
	return t, nil
}

// timeCol scans a NOT NULL time column.
type timeCol struct{ dst *time.Time }

func (c timeCol) Scan(v any) error {
	t, err := parseTime(v)
	*c.dst = t
	return err
}

// nullTimeCol scans a nullable time column into a *time.Time.
type nullTimeCol struct{ dst **time.Time }

func (c nullTimeCol) Scan(v any) error {
	if v == nil {
		*c.dst = nil
		return nil
	}
	t, err := parseTime(v)
	if err != nil {
		return err
	}
	*c.dst = &t
	return nil
}

// nullIDCol scans a nullable ID column; NULL becomes "".
type nullIDCol struct{ dst *string }

func (c nullIDCol) Scan(v any) error {
	var s sql.NullString
	if err := s.Scan(v); err != nil {
		return err
	}
	*c.dst = s.String
	return nil
}

// nullIntCol scans a nullable integer column into an *int64.
type nullIntCol struct{ dst **int64 }

func (c nullIntCol) Scan(v any) error {
	var n sql.NullInt64
	if err := n.Scan(v); err != nil {
		return err
	}
	*c.dst = nil
	if n.Valid {
		*c.dst = &n.Int64
	}
	return nil
}

// page returns LIMIT and OFFSET for p: pages start at 1, and a page size
// below 1 means 50.
func page(p store.Page) (limit, offset int) {
	limit = p.PageSize
	if limit < 1 {
		limit = 50
	}
	n := max(p.Page, 1)
	return limit, (n - 1) * limit
}

// where accumulates the conditions and arguments of a filtered query.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, arg any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, arg)
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
