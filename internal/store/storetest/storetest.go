// Package storetest is the conformance suite every store.Store
// implementation must pass. Implementations call Run from their own tests.
package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/store"
)

// Run runs the whole conformance suite. open returns a fresh, migrated,
// empty Store for each subtest and registers its own t.Cleanup to close it.
// Subtests run in parallel, each on its own Store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"ProjectRoundTrip", testProjectRoundTrip},
		{"ProjectNotFound", testProjectNotFound},
		{"ProjectConflict", testProjectConflict},
		{"UpdateProject", testUpdateProject},
		{"ListProjects", testListProjects},
		{"ListAllowedOrigins", testListAllowedOrigins},
		{"TokenRoundTrip", testTokenRoundTrip},
		{"TokenAndProjectByHash", testTokenAndProjectByHash},
		{"TokenNotFound", testTokenNotFound},
		{"TokenConflict", testTokenConflict},
		{"UpdateToken", testUpdateToken},
		{"ListTokens", testListTokens},
		{"DeactivateProjectTokens", testDeactivateProjectTokens},
		{"ConsumeToken", testConsumeToken},
		{"ConsumeTokenConcurrent", testConsumeTokenConcurrent},
		{"ReserveRequests", testReserveRequests},
		{"ReserveRequestsConcurrent", testReserveRequestsConcurrent},
		{"TouchTokens", testTouchTokens},
		{"TimePrecision", testTimePrecision},
		{"ConcurrentWriters", testConcurrentWriters},
		{"SumUsage", testSumUsage},
		{"RollupExact", testRollupExact},
		{"AuditEventRoundTrip", testAuditEventRoundTrip},
		{"ListAuditEvents", testListAuditEvents},
		{"PingStats", testPingStats},
		{"TryLock", testTryLock},
		{"TryLockConcurrent", testTryLockConcurrent},
		{"RetentionDeletes", testRetentionDeletes},
		{"AuthBlockRoundTrip", testAuthBlockRoundTrip},
		{"AuthBlockMerge", testAuthBlockMerge},
		{"UsageSeries", testUsageSeries},
		{"ConsoleSessions", testConsoleSessions},
		{"PendingAuthorizationRoundTrip", testPendingAuthorizationRoundTrip},
		{"DecidePendingAuthorization", testDecidePendingAuthorization},
		{"PollDeviceCode", testPollDeviceCode},
		{"PollDeviceCodeRedeemsOnce", testPollDeviceCodeRedeemsOnce},
		{"AgentTokens", testAgentTokens},
		{"SSOSessions", testSSOSessions},
		{"CountAuthFailure", testCountAuthFailure},
		{"SSORetention", testSSORetention},
		{"ProjectDirConcurrent", testProjectDirConcurrent},
		{"MemorySessionLifecycle", testMemorySessionLifecycle},
		{"MemoryFailures", testMemoryFailures},
		{"MemoryClaimConcurrent", testMemoryClaimConcurrent},
		{"MemoryRetention", testMemoryRetention},
		{"Replicas", testReplicas},
		{"ReplicaPurgeBatches", testReplicaPurgeBatches},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// zone is a non-UTC location: inputs are given in it so the suite can check
// that implementations store instants and return them in UTC.
var zone = time.FixedZone("UTC+05:30", 5*3600+30*60)

// base is a fixed instant with microsecond precision, expressed in zone.
func base() time.Time {
	return time.Date(2025, 3, 10, 12, 34, 56, 789012000, time.UTC).In(zone)
}

func ptr[T any](v T) *T { return &v }

func newProject(name string) *store.Project {
	now := base()
	return &store.Project{
		ID:              uuid.NewString(),
		Name:            name,
		Provider:        store.ProviderOpenAI,
		BaseURL:         "https://api.openai.com/v1",
		APIKeyEncrypted: []byte{0x00, 0x01, 0x7f, 0xfe, 0xff, 'k'},
		APIKeyHint:      "sk-...wxyz",
		IsActive:        true,
		RPMLimit:        60,
		TPMLimit:        100000,
		CreatedAt:       now,
		UpdatedAt:       now,
	}
}

func newToken(projectID string) *store.Token {
	id := uuid.NewString()
	sum := sha256.Sum256([]byte("secret-" + id))
	return &store.Token{
		ID:        id,
		ProjectID: projectID,
		Hash:      hex.EncodeToString(sum[:]),
		Prefix:    "wt_" + id[:6],
		Label:     "label " + id[:4],
		ExpiresAt: base().Add(30 * 24 * time.Hour),
		IsActive:  true,
		RPMLimit:  10,
		TPMLimit:  2000,
		CreatedAt: base(),
	}
}

func mustCreateProject(t *testing.T, s store.Store, p *store.Project) *store.Project {
	t.Helper()
	if err := s.CreateProject(t.Context(), p); err != nil {
		t.Fatalf("CreateProject(%s): %v", p.Name, err)
	}
	return p
}

func mustCreateToken(t *testing.T, s store.Store, tok *store.Token) *store.Token {
	t.Helper()
	if err := s.CreateToken(t.Context(), tok); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

func mustGetToken(t *testing.T, s store.Store, id string) *store.Token {
	t.Helper()
	got, err := s.GetToken(t.Context(), id)
	if err != nil {
		t.Fatalf("GetToken(%s): %v", id, err)
	}
	requireUTC(t, got)
	return got
}

// requireUTC fails the test if any time.Time or *time.Time field of the
// struct v points to is not in UTC.
func requireUTC(t *testing.T, v any) {
	t.Helper()
	rv := reflect.Indirect(reflect.ValueOf(v))
	for i := range rv.NumField() {
		name := rv.Type().Field(i).Name
		switch f := rv.Field(i).Interface().(type) {
		case time.Time:
			if f.Location() != time.UTC {
				t.Errorf("%T.%s = %v: location %v, want UTC", v, name, f, f.Location())
			}
		case *time.Time:
			if f != nil && f.Location() != time.UTC {
				t.Errorf("%T.%s = %v: location %v, want UTC", v, name, *f, f.Location())
			}
		}
	}
}

func requireErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func diff(t *testing.T, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, opts...); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// ids returns the IDs of records in order.
func ids[T any](records []*T, id func(*T) string) []string {
	out := make([]string, len(records))
	for i, r := range records {
		out[i] = id(r)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
