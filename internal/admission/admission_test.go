package admission_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/admission"
	"github.com/llmproxy/llm-proxy/internal/quota"
	"github.com/llmproxy/llm-proxy/internal/ratelimit"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

func TestLimits(t *testing.T) {
	t.Parallel()
	tok := &store.Token{ID: "t1", RPMLimit: 10, TPMLimit: 1000}
	prj := &store.Project{ID: "p1", RPMLimit: 0, TPMLimit: 5000}
	got := admission.Limits(tok, prj, 0)
	want := []ratelimit.Request{
		{Key: "tok:t1:rpm", Limit: 10, Cost: 1},
		{Key: "tok:t1:tpm", Limit: 1000, Cost: 1}, // an estimate of 0 still costs 1
		{Key: "prj:p1:tpm", Limit: 5000, Cost: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Limits (-want +got):\n%s", diff)
	}
}

// fakeCounter answers Consume with err and counts the calls.
type fakeCounter struct {
	err   error
	calls int
}

func (f *fakeCounter) Consume(context.Context, *store.Token) error {
	f.calls++
	return f.err
}

func quotaToken(maxRequests int64) *store.Token {
	return &store.Token{ID: uuid.NewString(), ProjectID: uuid.NewString(), MaxRequests: &maxRequests,
		RPMLimit: 2, TPMLimit: 100, ExpiresAt: time.Now().Add(time.Hour)}
}

// full reports whether every bucket of limits still admits its whole
// budget, i.e. nothing was spent.
func full(t *testing.T, lim ratelimit.Limiter, limits []ratelimit.Request) bool {
	t.Helper()
	all := make([]ratelimit.Request, len(limits))
	for i, r := range limits {
		all[i] = ratelimit.Request{Key: r.Key, Limit: r.Limit, Cost: r.Limit}
	}
	d, err := lim.Allow(context.Background(), all...)
	if err != nil {
		t.Fatal(err)
	}
	return d.Allowed
}

func TestSplitGivesTheLimitsBackWhenTheQuotaRefuses(t *testing.T) {
	t.Parallel()
	for _, counterErr := range []error{
		fmt.Errorf("consume quota: %w", store.ErrQuotaExceeded),
		fmt.Errorf("consume quota: %w: database away", quota.ErrUnavailable),
	} {
		lim := ratelimit.NewMemory()
		tok := quotaToken(5)
		limits := admission.Limits(tok, &store.Project{ID: tok.ProjectID}, 40)
		err := admission.NewSplit(lim, &fakeCounter{err: counterErr}, nil).Admit(context.Background(), tok, limits)
		if !errors.Is(err, counterErr) {
			t.Errorf("Admit = %v, want %v", err, counterErr)
		}
		if !full(t, lim, limits) {
			t.Errorf("%v: the refused request kept its rate limits spent", counterErr)
		}
	}
}

func TestSplitRateRefusalCountsNoQuota(t *testing.T) {
	t.Parallel()
	lim := ratelimit.NewMemory()
	counter := &fakeCounter{}
	a := admission.NewSplit(lim, counter, nil)
	tok := quotaToken(5)
	limits := admission.Limits(tok, &store.Project{ID: tok.ProjectID}, 1)
	for range 2 { // RPMLimit 2
		if err := a.Admit(context.Background(), tok, limits); err != nil {
			t.Fatalf("Admit within the limit: %v", err)
		}
	}
	err := a.Admit(context.Background(), tok, limits)
	var limited *admission.LimitedError
	if !errors.As(err, &limited) || !errors.Is(err, ratelimit.ErrLimited) {
		t.Fatalf("Admit past the limit = %v, want a *LimitedError wrapping ErrLimited", err)
	}
	if limited.Limit != "token requests per minute" || limited.RetryAfter <= 0 || limited.RetryAfter > 30*time.Second {
		t.Errorf("refusal %+v, want the token's requests per minute with a wait of at most 30s", limited)
	}
	if counter.calls != 2 {
		t.Errorf("counter consulted %d times, want 2: a rate refusal must not count against the quota", counter.calls)
	}
}

func TestReconcileSettlesTokensPerMinute(t *testing.T) {
	t.Parallel()
	lim := ratelimit.NewMemory()
	a := admission.NewSplit(lim, &fakeCounter{}, nil)
	tok := quotaToken(5)
	tok.RPMLimit = 1
	limits := admission.Limits(tok, &store.Project{ID: tok.ProjectID}, 90) // TPMLimit 100
	if err := a.Admit(context.Background(), tok, limits); err != nil {
		t.Fatal(err)
	}
	// The answer used 10 tokens, not 90: 90 of 100 are left, not 10.
	a.Reconcile(context.Background(), limits, 10)
	d, err := lim.Allow(context.Background(), ratelimit.Request{Key: limits[1].Key, Limit: 100, Cost: 90})
	if err != nil || !d.Allowed {
		t.Errorf("tokens/min after reconciling: %+v, %v; want 90 tokens left", d, err)
	}
	// The requests/min budget is untouched by Reconcile: still spent.
	if d, _ := lim.Allow(context.Background(), ratelimit.Request{Key: limits[0].Key, Limit: 1, Cost: 1}); d.Allowed {
		t.Error("Reconcile gave back a request of the requests/min budget")
	}
}

// TestCombinedIsAllOrNothing runs the Redis admission: a spent quota
// spends no rate limit, and a rate refusal counts no quota.
func TestCombinedIsAllOrNothing(t *testing.T) {
	t.Parallel()
	client, prefix := testenv.RedisClient(t)
	st := teststore.SQLite(t)
	lim := ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	counter := quota.NewRedis(quota.RedisOptions{Limiter: lim, Store: st, Toucher: nopToucher{}})
	a := admission.NewCombined(lim, counter, nil)
	ctx := context.Background()

	tok := newToken(t, st, 1)
	limits := admission.Limits(tok, &store.Project{ID: tok.ProjectID}, 1)
	if err := a.Admit(ctx, tok, limits); err != nil {
		t.Fatalf("first request: %v", err)
	}
	if err := a.Admit(ctx, tok, limits); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("past max_requests: %v, want ErrQuotaExceeded", err)
	}
	// RPMLimit 2: one spent by the admitted request, none by the refused one.
	if d, err := lim.Allow(ctx, ratelimit.Request{Key: limits[0].Key, Limit: 2, Cost: 1}); err != nil || !d.Allowed {
		t.Errorf("the quota refusal spent the rate limit: %+v, %v", d, err)
	}

	tok = newToken(t, st, 10)
	limits = admission.Limits(tok, &store.Project{ID: tok.ProjectID}, 1)
	var limited *admission.LimitedError
	for i := range 3 {
		err := a.Admit(ctx, tok, limits)
		if i < 2 && err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if i == 2 && !errors.As(err, &limited) {
			t.Fatalf("past RPMLimit: %v, want a *LimitedError", err)
		}
	}
	// Two of ten counted: the refused third is not, so eight remain.
	for i := range 8 {
		if err := counter.Consume(ctx, tok); err != nil {
			t.Fatalf("quota request %d of the 8 left: %v", i+1, err)
		}
	}
	if err := counter.Consume(ctx, tok); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Errorf("the rate refusal was counted against the quota: %v", err)
	}
}

type nopToucher struct{}

func (nopToucher) Touch(string, time.Time) {}

// newToken creates a token with max_requests and RPMLimit 2 in st.
func newToken(t *testing.T, st store.Store, maxRequests int64) *store.Token {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	p := &store.Project{ID: uuid.NewString(), Name: "admission-" + uuid.NewString(), Provider: store.ProviderOpenAI,
		BaseURL: "https://api.openai.com/v1", APIKeyEncrypted: []byte("ciphertext"), IsActive: true, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateProject(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	tok := quotaToken(maxRequests)
	tok.ProjectID, tok.Hash, tok.Prefix, tok.IsActive, tok.CreatedAt = p.ID, uuid.NewString(), "sk-test", true, now
	if err := st.CreateToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return tok
}
