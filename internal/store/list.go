package store

import (
	"encoding/json"
	"fmt"
)

// List columns (allowed origins, allowed models) hold a JSON array in both
// dialects (jsonb on PostgreSQL, TEXT on SQLite); ListValue and ListScanner
// are their one codec, used by both implementations.

// ListValue encodes a list column's value: a JSON array, [] for nil.
func ListValue(v []string) (string, error) {
	if len(v) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// ListScanner scans a JSON array column into *dst (an sql.Scanner); an
// empty array becomes nil.
func ListScanner(dst *[]string) interface{ Scan(src any) error } {
	return listScanner{dst}
}

type listScanner struct{ dst *[]string }

func (c listScanner) Scan(src any) error {
	var b []byte
	switch src := src.(type) {
	case string:
		b = []byte(src)
	case []byte:
		b = src
	default:
		return fmt.Errorf("decode list: unexpected %T", src)
	}
	var v []string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode list: %w", err)
	}
	if len(v) == 0 {
		v = nil
	}
	*c.dst = v
	return nil
}
