package policy_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llm-proxy/internal/policy"
	"github.com/llmproxy/llm-proxy/internal/store"
)

// fakeLister serves the origins of its active projects and counts the
// lookups.
type fakeLister struct {
	mu       sync.Mutex
	projects []*store.Project
	err      error
	calls    int
}

func (f *fakeLister) ListAllowedOrigins(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	var out []string
	for _, p := range f.projects {
		if p.IsActive {
			out = append(out, p.AllowedOrigins...)
		}
	}
	return out, nil
}

func TestOriginsCacheAndInvalidation(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &fakeLister{projects: []*store.Project{
		{ID: "a", IsActive: true, AllowedOrigins: []string{"https://a.example"}},
		{ID: "b", IsActive: false, AllowedOrigins: []string{"https://b.example"}},
	}}
	o := policy.NewOrigins(st, policy.OriginsOptions{TTL: time.Minute, Now: func() time.Time { return now }})
	ctx := t.Context()
	for origin, want := range map[string]bool{"https://a.example": true, "https://b.example": false, "null": false, "": false} {
		if got := o.Allowed(ctx, origin); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", origin, got, want)
		}
	}
	if st.calls != 1 {
		t.Fatalf("%d lookups for four preflights, want 1", st.calls)
	}

	st.projects = append(st.projects, &store.Project{ID: "c", IsActive: true, AllowedOrigins: []string{"*"}})
	if o.Allowed(ctx, "https://c.example") {
		t.Error("a change showed before the TTL or an invalidation")
	}
	o.InvalidateProject("c")
	if !o.Allowed(ctx, "https://c.example") || st.calls != 2 {
		t.Errorf("after invalidation: wildcard not seen (%d lookups)", st.calls)
	}

	// A failing reload keeps the last union and retries on the next call.
	st.err = errors.New("database down")
	now = now.Add(2 * time.Minute)
	if !o.Allowed(ctx, "https://a.example") {
		t.Error("a failed reload dropped the previous union")
	}
	st.err = nil
	st.projects = st.projects[:1]
	if o.Allowed(ctx, "https://c.example") {
		t.Error("after the store came back, the wildcard project is still allowed")
	}
}

func TestOriginsWithoutAnyLoadRefuse(t *testing.T) {
	t.Parallel()
	o := policy.NewOrigins(&fakeLister{err: errors.New("down")}, policy.OriginsOptions{})
	if o.Allowed(t.Context(), "https://a.example") {
		t.Error("allowed with no union ever loaded")
	}
}

func TestOriginAllowed(t *testing.T) {
	t.Parallel()
	list := []string{"https://a.example"}
	if !policy.OriginAllowed(list, "https://a.example") || policy.OriginAllowed(list, "https://b.example") ||
		policy.OriginAllowed(nil, "https://a.example") || !policy.OriginAllowed([]string{"*"}, "https://b.example") ||
		policy.OriginAllowed([]string{"*"}, "null") {
		t.Error("OriginAllowed")
	}
}
