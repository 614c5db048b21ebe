package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	_ "modernc.org/sqlite"

	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/postgres"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
	"github.com/llmproxy/llm-proxy/internal/testkit/testenv"
	"github.com/llmproxy/llm-proxy/internal/testkit/teststore"
)

// Sizes of the data set copied by the tests.
const (
	nProjects = 3
	nTokens   = 40
	nUsage    = 1500
	nAudit    = 150
	nAgents   = 5
)

// fixture is what fill wrote: upstream keys in clear by project ID and one
// token secret, to prove the copy keeps them usable.
type fixture struct {
	apiKeys     map[string]string
	tokenSecret string
	tokenCount  int64
}

func newKey(t *testing.T) (raw []byte, b64 string) {
	t.Helper()
	raw = make([]byte, secret.KeySize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return raw, base64.StdEncoding.EncodeToString(raw)
}

func cipherFor(t *testing.T, key []byte) *secret.Cipher {
	t.Helper()
	c, err := secret.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixtureBase is the time of the fixture's first rows.
var fixtureBase = time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)

// fill writes projects, tokens (with request counts), usage and audit
// events through the store, as the proxy would.
func fill(t *testing.T, s store.Store, c *secret.Cipher) fixture {
	t.Helper()
	ctx := context.Background()
	base := fixtureBase
	f := fixture{apiKeys: map[string]string{}}
	var projectIDs, tokenIDs []string
	for i := range nProjects {
		key := fmt.Sprintf("sk-upstream-%d-%s", i, uuid.NewString())
		enc, err := c.Encrypt([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		p := &store.Project{ID: uuid.NewString(), Name: fmt.Sprintf("team-%d", i), Provider: store.ProviderOpenAI,
			BaseURL: "https://api.example.com/v1", APIKeyEncrypted: enc, APIKeyHint: secret.Mask(key), IsActive: i != 2,
			RPMLimit: 60 * i, CreatedAt: base.Add(time.Duration(i) * time.Second), UpdatedAt: base.Add(time.Hour)}
		if i == 2 {
			at := base.Add(2 * time.Hour)
			p.DeactivatedAt = &at
		}
		if err := s.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		f.apiKeys[p.ID] = key
		projectIDs = append(projectIDs, p.ID)
	}
	for i := range nTokens {
		secretText := "sk-tok-" + uuid.NewString()
		sum := sha256.Sum256([]byte(secretText))
		tok := &store.Token{ID: uuid.NewString(), ProjectID: projectIDs[i%nProjects], Hash: hex.EncodeToString(sum[:]),
			Prefix: secretText[:10], Label: fmt.Sprintf("dev %d", i), ExpiresAt: base.Add(90 * 24 * time.Hour),
			RequestCount: int64(i * 7), IsActive: true, CreatedAt: base.Add(time.Duration(i) * time.Millisecond)}
		if i%3 == 0 {
			limit := int64(1000)
			tok.MaxRequests = &limit
		}
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		tokenIDs = append(tokenIDs, tok.ID)
		if i == 5 {
			f.tokenSecret, f.tokenCount = secretText, tok.RequestCount
		}
	}
	batch := make([]store.Usage, 0, 500)
	for i := range nUsage {
		batch = append(batch, store.Usage{ID: uuid.NewString(), CreatedAt: base.Add(time.Duration(i) * time.Second),
			RequestID: fmt.Sprintf("req-%d", i), ProjectID: projectIDs[i%nProjects], TokenID: tokenIDs[i%nTokens],
			Model: "gpt-4o-mini", Endpoint: "/v1/chat/completions", Status: 200, PromptTokens: i % 97,
			CompletionTokens: i % 31, TotalTokens: i%97 + i%31, Latency: time.Duration(i%500) * time.Millisecond,
			Streamed: i%2 == 0})
		if len(batch) == cap(batch) {
			if err := s.InsertUsage(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	var events []store.AuditEvent
	for i := range nAudit {
		events = append(events, store.AuditEvent{ID: uuid.NewString(), CreatedAt: base.Add(time.Duration(i) * time.Minute),
			Actor: "admin", Action: "token.create", Outcome: store.OutcomeSuccess, ProjectID: projectIDs[i%nProjects],
			ClientIP: "10.0.0.1", Method: "POST", Path: "/manage/tokens",
			Metadata: map[string]any{"n": float64(i), "label": "dev", "nested": map[string]any{"b": true, "a": "x"}}})
	}
	if err := s.InsertAuditEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	// Device login: agent tokens issued through redeemed authorizations,
	// one authorization still pending and a browser sign-in.
	for i := range nAgents + 1 {
		id := uuid.NewString()
		pa := &store.PendingAuthorization{ID: id, DeviceCodeHash: "dc-" + id, UserCodeHash: "uc-" + id, Status: store.PendingStatusPending,
			Label: fmt.Sprintf("laptop %d", i), ClientIP: "192.0.2.1", CreatedAt: base, ExpiresAt: base.Add(10 * time.Minute)}
		if err := s.CreatePendingAuthorization(ctx, pa); err != nil {
			t.Fatal(err)
		}
		if i == nAgents {
			break
		}
		if err := s.DecidePendingAuthorization(ctx, id, store.PendingStatusApproved, "https://idp.example", fmt.Sprint("sub-", i),
			"p@example.com", base); err != nil {
			t.Fatal(err)
		}
		tok := &store.AgentToken{ID: uuid.NewString(), Hash: "at-" + id, Prefix: "sk-agent-abcde", IsActive: i != 0, CreatedAt: base,
			LastAuthenticatedAt: &base, AuthExpiresAt: base.Add(720 * time.Hour)}
		if got, err := s.PollDeviceCode(ctx, pa.DeviceCodeHash, base, time.Second, tok); err != nil || got != store.PollIssued {
			t.Fatalf("PollDeviceCode: %q, %v", got, err)
		}
	}
	if err := s.CreateSSOSession(ctx, &store.SSOSession{ID: uuid.NewString(), SecretHash: "sess", State: "st", Nonce: "n",
		Verifier: "v", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return f
}

// contents is everything a store shows of its data, for comparing two
// stores; upstream keys appear decrypted.
type contents struct {
	Projects []*store.Project
	APIKeys  map[string]string
	Tokens   []*store.Token
	Audit    []*store.AuditEvent
	Usage    []store.UsageTotal
	Agents   []*store.AgentToken
}

func read(t *testing.T, s store.Store, c *secret.Cipher) contents {
	t.Helper()
	ctx := context.Background()
	var got contents
	var err error
	all := store.Page{PageSize: 1 << 20}
	if got.Projects, _, err = s.ListProjects(ctx, store.ProjectFilter{Page: all}); err != nil {
		t.Fatal(err)
	}
	got.APIKeys = map[string]string{}
	for _, p := range got.Projects {
		plain, err := c.Decrypt(p.APIKeyEncrypted)
		if err != nil {
			t.Fatalf("decrypt the upstream key of %s: %v", p.Name, err)
		}
		got.APIKeys[p.ID] = string(plain)
		p.APIKeyEncrypted = nil
	}
	if got.Tokens, _, err = s.ListTokens(ctx, store.TokenFilter{Page: all}); err != nil {
		t.Fatal(err)
	}
	if got.Audit, _, err = s.ListAuditEvents(ctx, store.AuditFilter{Page: all}); err != nil {
		t.Fatal(err)
	}
	// Whole days come from the copied roll-up; the ragged window (the
	// fixture's rows are a second apart from base) reads its hourly rows
	// and the raw rows at the edges.
	ragged := store.UsageFilter{From: fixtureBase.Add(1234*time.Second + time.Millisecond), To: fixtureBase.Add(4321 * time.Second),
		GroupBy: store.GroupByToken}
	for _, f := range []store.UsageFilter{{GroupBy: store.GroupByDay}, {GroupBy: store.GroupByModel}, {}, ragged} {
		totals, err := s.SumUsage(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		got.Usage = append(got.Usage, totals...)
	}
	if got.Agents, _, err = s.ListAgentTokens(ctx, store.AgentTokenFilter{Page: all}); err != nil {
		t.Fatal(err)
	}
	// The implementations list in different orders.
	slices.SortFunc(got.Projects, func(a, b *store.Project) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(got.Tokens, func(a, b *store.Token) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(got.Audit, func(a, b *store.AuditEvent) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(got.Agents, func(a, b *store.AgentToken) int { return strings.Compare(a.ID, b.ID) })
	slices.SortStableFunc(got.Usage, func(a, b store.UsageTotal) int { return strings.Compare(a.Key, b.Key) })
	return got
}

func openSQLite(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func openPostgres(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), postgres.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// sqliteFixture is a migrated SQLite database filled by fill, encrypted
// with the key file beside it, as a proxy without ENCRYPTION_KEY leaves it.
func sqliteFixture(t *testing.T) (path string, key []byte, f fixture, want contents) {
	t.Helper()
	path = testenv.SQLitePath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	teststore.Migrate(t, schema.DriverSQLite, path)
	key, _, err := secret.LoadOrCreateKeyFile(secret.KeyFileBeside(path))
	if err != nil {
		t.Fatal(err)
	}
	db := openSQLite(t, path)
	defer db.Close()
	f = fill(t, db, cipherFor(t, key))
	return path, key, f, read(t, db, cipherFor(t, key))
}

var progressLine = regexp.MustCompile(`(?m)^(\w+)\s+(\d+) rows\s+(\d+) rows/s\s+checksum [0-9a-f]{16}\s+ok$`)

// checkProgress checks one line per table with its row count, and logs the
// rates.
func checkProgress(t *testing.T, out string, wantRows map[string]int) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range progressLine.FindAllStringSubmatch(out, -1) {
		seen[m[1]] = true
		if want, ok := wantRows[m[1]]; ok && m[2] != fmt.Sprint(want) {
			t.Errorf("%s: copied %s rows, want %d", m[1], m[2], want)
		}
		t.Logf("%s: %s rows, %s rows/s", m[1], m[2], m[3])
	}
	for _, table := range []string{"projects", "tokens", "usage", "audit_events", "agent_tokens", "pending_authorizations",
		"auth_rate_limits", "user_project_dirs", "session_summaries", "memory_sessions", "usage_rollup", "sso_sessions"} {
		if !seen[table] {
			t.Errorf("no progress line for %s in:\n%s", table, out)
		}
	}
	if !strings.Contains(out, "row counts and checksums match; committed") {
		t.Errorf("no final verification line in:\n%s", out)
	}
}

var wantRows = map[string]int{"projects": nProjects, "tokens": nTokens, "usage": nUsage, "audit_events": nAudit,
	"agent_tokens": nAgents, "pending_authorizations": 1, "sso_sessions": 1}

func TestCopySQLiteToPostgresAndBack(t *testing.T) {
	t.Parallel()
	path, _, f, want := sqliteFixture(t)
	pgURL := postgresURL(t)
	pgKey, pgKeyB64 := newKey(t)

	r := migrateEnv(t, []string{"ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--from", "sqlite:///"+path, "--to", pgURL)
	r.want(t, 0)
	checkProgress(t, r.stdout, wantRows)
	if !strings.Contains(r.stdout, ":***@") {
		t.Errorf("stdout does not name the masked target: %s", r.stdout)
	}
	// The copied days, in the default partition at first, got their own.
	if !strings.Contains(r.stdout, "daily partitions") {
		t.Errorf("stdout does not report the partitions created for the copied rows: %s", r.stdout)
	}

	pg := openPostgres(t, pgURL)
	defer pg.Close()
	if diff := cmp.Diff(want, read(t, pg, cipherFor(t, pgKey))); diff != "" {
		t.Fatalf("PostgreSQL after copy differs from SQLite (-sqlite +postgres):\n%s", diff)
	}
	sum := sha256.Sum256([]byte(f.tokenSecret))
	tok, _, err := pg.GetTokenAndProjectByHash(context.Background(), hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatalf("token lookup by hash after copy: %v", err)
	}
	count, err := pg.ConsumeToken(context.Background(), tok.ID, time.Now())
	if err != nil || count != f.tokenCount+1 {
		t.Fatalf("ConsumeToken after copy = %d, %v; want %d (the copied count + 1)", count, err, f.tokenCount+1)
	}

	// A second copy into the now non-empty target is refused and changes
	// nothing.
	before := read(t, pg, cipherFor(t, pgKey))
	r = migrateEnv(t, []string{"ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--from", "sqlite:///"+path, "--to", pgURL)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "--truncate") {
		t.Errorf("refusal does not say the target holds data and how to replace it: %s", r.stderr)
	}
	if diff := cmp.Diff(before, read(t, pg, cipherFor(t, pgKey))); diff != "" {
		t.Fatalf("a refused copy changed the target:\n%s", diff)
	}

	// --truncate replaces the target's data (the consumed request above is
	// gone again).
	migrateEnv(t, []string{"ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--truncate", "--from", "sqlite:///"+path, "--to", pgURL).want(t, 0)
	if diff := cmp.Diff(want, read(t, pg, cipherFor(t, pgKey))); diff != "" {
		t.Fatalf("PostgreSQL after copy --truncate differs from SQLite:\n%s", diff)
	}

	// And back: PostgreSQL to a new SQLite database, whose key file the
	// copy creates.
	back := testenv.SQLitePath(t)
	r = migrateEnv(t, []string{"SOURCE_ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--from", pgURL, "--to", "sqlite:///"+back)
	r.want(t, 0)
	checkProgress(t, r.stdout, wantRows)
	backKey, err := secret.LoadKeyFile(secret.KeyFileBeside(back))
	if err != nil {
		t.Fatalf("the copy left no key file beside the SQLite target: %v", err)
	}
	lite := openSQLite(t, back)
	if diff := cmp.Diff(want, read(t, lite, cipherFor(t, backKey))); diff != "" {
		t.Fatalf("SQLite copied back from PostgreSQL differs (-original +copy):\n%s", diff)
	}
	// While a store (a proxy) holds the SQLite target, copy keeps out.
	r = migrateEnv(t, []string{"SOURCE_ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--from", pgURL, "--to", "sqlite:///"+back)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "stop the proxy first") {
		t.Errorf("copy into a held SQLite database: %s", r.stderr)
	}
	if err := lite.Close(); err != nil {
		t.Fatal(err)
	}
	r = migrateEnv(t, []string{"SOURCE_ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--from", pgURL, "--to", "sqlite:///"+back)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "not empty") {
		t.Errorf("copy into a filled SQLite database: %s", r.stderr)
	}
}

func TestCopyFailureLeavesTargetUntouched(t *testing.T) {
	t.Parallel()
	path, _, _, _ := sqliteFixture(t)
	pgURL := migratedPostgresURL(t)
	pgKey, pgKeyB64 := newKey(t)

	// The target holds other data, which a failed --truncate copy must keep.
	pg := openPostgres(t, pgURL)
	defer pg.Close()
	fill(t, pg, cipherFor(t, pgKey))
	before := read(t, pg, cipherFor(t, pgKey))

	t.Run("wrong source key", func(t *testing.T) {
		_, wrong := newKey(t)
		r := migrateEnv(t, []string{"ENCRYPTION_KEY=" + pgKeyB64, "SOURCE_ENCRYPTION_KEY=" + wrong},
			"copy", "--truncate", "--from", "sqlite:///"+path, "--to", pgURL)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "source key") || !strings.Contains(r.stderr, "target is unchanged") {
			t.Errorf("stderr does not blame the source key: %s", r.stderr)
		}
		if diff := cmp.Diff(before, read(t, pg, cipherFor(t, pgKey))); diff != "" {
			t.Fatalf("a failed copy changed the target:\n%s", diff)
		}
	})

	t.Run("row the target refuses", func(t *testing.T) {
		// A usage row whose token ID is not a UUID: SQLite took it,
		// PostgreSQL's uuid column will not, after every table before
		// usage has been written.
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.Exec(`UPDATE usage SET token_id = 'not-a-uuid' WHERE rowid = (SELECT max(rowid) FROM usage)`)
		if cerr := db.Close(); err != nil || cerr != nil {
			t.Fatal(err, cerr)
		}
		r := migrateEnv(t, []string{"ENCRYPTION_KEY=" + pgKeyB64}, "copy", "--truncate", "--from", "sqlite:///"+path, "--to", pgURL)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "not-a-uuid") {
			t.Errorf("stderr does not name the bad value: %s", r.stderr)
		}
		if !strings.Contains(r.stdout, "tokens ") {
			t.Errorf("the copy failed before it wrote any table, which proves less: %s", r.stdout)
		}
		if diff := cmp.Diff(before, read(t, pg, cipherFor(t, pgKey))); diff != "" {
			t.Fatalf("a failed copy changed the target:\n%s", diff)
		}
	})

	t.Run("sqlite target", func(t *testing.T) {
		// PostgreSQL holds rows SQLite refuses: an audit outcome the
		// CHECK constraint rejects is impossible there, so break SQLite's
		// side instead: a filled SQLite target with an existing key file.
		target, _, _, want := sqliteFixture(t)
		keyBefore, err := os.ReadFile(secret.KeyFileBeside(target))
		if err != nil {
			t.Fatal(err)
		}
		_, wrong := newKey(t)
		r := migrateEnv(t, []string{"SOURCE_ENCRYPTION_KEY=" + wrong}, "copy", "--truncate", "--from", pgURL, "--to", "sqlite:///"+target)
		r.want(t, 1)
		keyAfter, err := os.ReadFile(secret.KeyFileBeside(target))
		if err != nil || string(keyAfter) != string(keyBefore) {
			t.Fatalf("the key file beside the target changed: %v", err)
		}
		lite := openSQLite(t, target)
		defer lite.Close()
		key, err := secret.LoadKeyFile(secret.KeyFileBeside(target))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, read(t, lite, cipherFor(t, key))); diff != "" {
			t.Fatalf("a failed copy changed the SQLite target:\n%s", diff)
		}
	})
}

func TestCopyRefusesBadInvocations(t *testing.T) {
	t.Parallel()
	path, _, _, _ := sqliteFixture(t)
	other := filepath.Join(t.TempDir(), "other.db")
	for _, tc := range []struct {
		name    string
		env     []string
		args    []string
		code    int
		wantErr string
	}{
		{name: "no target", args: []string{"copy", "--from", "sqlite:///" + path}, code: 2, wantErr: "--from URL and --to URL"},
		{name: "same database", args: []string{"copy", "--from", "sqlite:///" + path, "--to", "sqlite:///" + path}, code: 2, wantErr: "same database"},
		{name: "truncate elsewhere", args: []string{"up", "--truncate"}, code: 2, wantErr: "--truncate does not apply to up"},
		{name: "postgres target without key", args: []string{"copy", "--from", "sqlite:///" + path, "--to", "postgres://u:" + password + "@127.0.0.1:1/db"},
			code: 1, wantErr: "ENCRYPTION_KEY is required"},
		{name: "postgres source without key", args: []string{"copy", "--from", "postgres://u:" + password + "@127.0.0.1:1/db", "--to", "sqlite:///" + other},
			code: 1, wantErr: "SOURCE_ENCRYPTION_KEY is required"},
		{name: "missing source", args: []string{"copy", "--from", "sqlite:///" + other + ".none", "--to", "sqlite:///" + other},
			code: 1, wantErr: "source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := migrateEnv(t, tc.env, tc.args...)
			r.want(t, tc.code)
			if !strings.Contains(r.stderr, tc.wantErr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.wantErr)
			}
		})
	}
	// Nothing was created for the failed copies into other.
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("a refused copy created the target: %v", err)
	}
}
