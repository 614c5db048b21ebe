package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

func testProjectRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	active := mustCreateProject(t, s, newProject("alpha"))

	inactive := newProject("azure-team")
	inactive.Provider = store.ProviderAzure
	inactive.BaseURL = "https://example.openai.azure.com"
	inactive.APIVersion = "2024-02-01"
	inactive.IsActive = false
	inactive.DeactivatedAt = ptr(base().Add(time.Hour))
	inactive.RPMLimit, inactive.TPMLimit = 0, 0
	inactive.AllowedOrigins = []string{"https://app.example.com", "http://localhost:5173"}
	inactive.AllowedModels = []string{"gpt-4.1-*", "o3"}
	inactive.CacheTTLSeconds = 300
	inactive.UpdatedAt = base().Add(time.Hour)
	mustCreateProject(t, s, inactive)

	for _, want := range []*store.Project{active, inactive} {
		got, err := s.GetProject(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetProject(%s): %v", want.Name, err)
		}
		requireUTC(t, got)
		diff(t, "GetProject "+want.Name, want, got)

		got, err = s.GetProjectByName(ctx, want.Name)
		if err != nil {
			t.Fatalf("GetProjectByName(%s): %v", want.Name, err)
		}
		requireUTC(t, got)
		diff(t, "GetProjectByName "+want.Name, want, got)
	}
}

func testProjectNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateProject(t, s, newProject("present"))
	missing := newProject("missing")
	malformed := newProject("malformed")
	malformed.ID = "not-a-uuid"

	tests := []struct {
		name string
		call func() error
	}{
		{"GetProject missing", func() error { _, err := s.GetProject(ctx, uuid.NewString()); return err }},
		{"GetProject malformed", func() error { _, err := s.GetProject(ctx, "not-a-uuid"); return err }},
		{"GetProject empty", func() error { _, err := s.GetProject(ctx, ""); return err }},
		{"GetProjectByName missing", func() error { _, err := s.GetProjectByName(ctx, "absent"); return err }},
		{"UpdateProject missing", func() error { return s.UpdateProject(ctx, missing) }},
		{"UpdateProject malformed", func() error { return s.UpdateProject(ctx, malformed) }},
	}
	for _, tc := range tests {
		requireErr(t, tc.name, tc.call(), store.ErrNotFound)
	}
}

func testProjectConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := mustCreateProject(t, s, newProject("taken"))
	second := mustCreateProject(t, s, newProject("other"))

	requireErr(t, "CreateProject duplicate name", s.CreateProject(ctx, newProject("taken")), store.ErrConflict)

	sameID := newProject("fresh-name")
	sameID.ID = first.ID
	requireErr(t, "CreateProject duplicate id", s.CreateProject(ctx, sameID), store.ErrConflict)

	rename := *second
	rename.Name = "taken"
	requireErr(t, "UpdateProject to a taken name", s.UpdateProject(ctx, &rename), store.ErrConflict)

	got, err := s.GetProject(ctx, second.ID)
	if err != nil {
		t.Fatalf("GetProject: %v", err)
	}
	diff(t, "project after refused rename", second, got)
}

func testUpdateProject(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := mustCreateProject(t, s, newProject("before"))
	bystander := mustCreateProject(t, s, newProject("bystander"))

	upd := *orig
	upd.Name = "after"
	upd.BaseURL = "https://proxy.example.com/v1"
	upd.APIVersion = "2025-01-01"
	upd.APIKeyEncrypted = []byte("new ciphertext")
	upd.APIKeyHint = "sk-...abcd"
	upd.IsActive = false
	upd.DeactivatedAt = ptr(base().Add(2 * time.Hour))
	upd.RPMLimit = 5
	upd.TPMLimit = 7
	upd.AllowedOrigins = []string{"*"}
	upd.AllowedModels = []string{"claude-*", "gpt-4o"}
	upd.CacheTTLSeconds = 60
	upd.UpdatedAt = base().Add(2 * time.Hour)
	if err := s.UpdateProject(ctx, &upd); err != nil {
		t.Fatalf("UpdateProject: %v", err)
	}
	got, err := s.GetProject(ctx, orig.ID)
	if err != nil {
		t.Fatalf("GetProject: %v", err)
	}
	requireUTC(t, got)
	diff(t, "updated project", &upd, got)
	if _, err := s.GetProjectByName(ctx, "before"); err == nil {
		t.Errorf("GetProjectByName(old name) succeeded after rename")
	}

	// Reactivating clears deactivated_at back to NULL.
	upd.IsActive = true
	upd.DeactivatedAt = nil
	upd.UpdatedAt = base().Add(3 * time.Hour)
	if err := s.UpdateProject(ctx, &upd); err != nil {
		t.Fatalf("UpdateProject reactivate: %v", err)
	}
	got, err = s.GetProjectByName(ctx, "after")
	if err != nil {
		t.Fatalf("GetProjectByName: %v", err)
	}
	diff(t, "reactivated project", &upd, got)

	other, err := s.GetProject(ctx, bystander.ID)
	if err != nil {
		t.Fatalf("GetProject bystander: %v", err)
	}
	diff(t, "untouched project", bystander, other)
}

func testListAllowedOrigins(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.ListAllowedOrigins(ctx)
	if err != nil {
		t.Fatalf("ListAllowedOrigins without projects: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("ListAllowedOrigins without projects = %q, want none", got)
	}
	lists := map[string][]string{
		"a": {"https://b.example", "https://a.example"},
		"b": {"https://b.example", "*"},
		"c": nil,
	}
	for name, origins := range lists {
		p := newProject(name)
		p.AllowedOrigins = origins
		mustCreateProject(t, s, p)
	}
	inactive := newProject("inactive")
	inactive.AllowedOrigins = []string{"https://inactive.example"}
	inactive.IsActive = false
	inactive.DeactivatedAt = ptr(base())
	mustCreateProject(t, s, inactive)

	got, err = s.ListAllowedOrigins(ctx)
	if err != nil {
		t.Fatalf("ListAllowedOrigins: %v", err)
	}
	diff(t, "ListAllowedOrigins", []string{"*", "https://a.example", "https://b.example"}, got)
}

func testListProjects(t *testing.T, s store.Store) {
	ctx := t.Context()
	all := map[string]*store.Project{}
	var activeIDs, inactiveIDs []string
	for i := range 8 {
		p := newProject(fmt.Sprintf("project-%02d", i))
		p.CreatedAt = base().Add(time.Duration(i) * time.Minute)
		if i%3 == 2 {
			p.IsActive = false
			p.DeactivatedAt = ptr(base().Add(time.Hour))
			inactiveIDs = append(inactiveIDs, p.ID)
		} else {
			activeIDs = append(activeIDs, p.ID)
		}
		mustCreateProject(t, s, p)
		all[p.ID] = p
	}
	var allIDs []string
	for id := range all {
		allIDs = append(allIDs, id)
	}
	projectID := func(p *store.Project) string { return p.ID }

	filters := []struct {
		name   string
		active *bool
		want   []string
	}{
		{"all", nil, allIDs},
		{"active", ptr(true), activeIDs},
		{"inactive", ptr(false), inactiveIDs},
	}
	for _, tc := range filters {
		got, total, err := s.ListProjects(ctx, store.ProjectFilter{Active: tc.active, Page: store.Page{Page: 1, PageSize: 100}})
		if err != nil {
			t.Fatalf("ListProjects %s: %v", tc.name, err)
		}
		if total != len(tc.want) {
			t.Errorf("ListProjects %s: total %d, want %d", tc.name, total, len(tc.want))
		}
		diff(t, "ListProjects "+tc.name+" ids", sorted(tc.want), sorted(ids(got, projectID)))
		for _, p := range got {
			requireUTC(t, p)
			diff(t, "listed project "+p.Name, all[p.ID], p)
		}
	}

	// Pages of 3 over 8 records: 3, 3, 2, then an empty page; the total is
	// always 8 and together the pages hold every record once.
	var paged []string
	for page, wantLen := range []int{3, 3, 2, 0} {
		got, total, err := s.ListProjects(ctx, store.ProjectFilter{Page: store.Page{Page: page + 1, PageSize: 3}})
		if err != nil {
			t.Fatalf("ListProjects page %d: %v", page+1, err)
		}
		if len(got) != wantLen || total != len(all) {
			t.Errorf("ListProjects page %d: %d records, total %d; want %d, %d", page+1, len(got), total, wantLen, len(all))
		}
		paged = append(paged, ids(got, projectID)...)
	}
	diff(t, "ids over all pages", sorted(allIDs), sorted(paged))

	got, total, err := s.ListProjects(ctx, store.ProjectFilter{Active: ptr(false), Page: store.Page{Page: 2, PageSize: 1}})
	if err != nil {
		t.Fatalf("ListProjects inactive page 2: %v", err)
	}
	if len(got) != 1 || total != len(inactiveIDs) {
		t.Errorf("ListProjects inactive page 2: %d records, total %d; want 1, %d", len(got), total, len(inactiveIDs))
	}
}
