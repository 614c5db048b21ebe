package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/auth"
	"github.com/llmproxy/llm-proxy/internal/schema"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/store/sqlite"
)

// seedAgentToken migrates the SQLite database at path and issues an agent
// token in it as an approved device login does (a pending authorization,
// approved, redeemed by its poll), before the proxy opens the database. It
// returns the token's secret.
func seedAgentToken(ctx context.Context, path string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	m, err := schema.New(ctx, schema.DriverSQLite, path, nil)
	if err != nil {
		return "", err
	}
	err = m.Up(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("migrate the bench database: %w", err)
	}
	db, err := sqlite.Open(ctx, sqlite.Options{Path: path})
	if err != nil {
		return "", err
	}
	defer db.Close()

	now := time.Now().UTC()
	id := uuid.NewString()
	p := &store.PendingAuthorization{ID: id, DeviceCodeHash: auth.Hash("bench-device-" + id), UserCodeHash: auth.Hash("bench-user-" + id),
		Status: store.PendingStatusPending, Label: "bench", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	if err := db.CreatePendingAuthorization(ctx, p); err != nil {
		return "", err
	}
	if err := db.DecidePendingAuthorization(ctx, id, store.PendingStatusApproved, "http://127.0.0.1:9/bench-issuer", "bench-user",
		"bench@example.com", now); err != nil {
		return "", err
	}
	secret, prefix, hash, err := auth.NewAgentToken()
	if err != nil {
		return "", err
	}
	tok := &store.AgentToken{ID: uuid.NewString(), Hash: hash, Prefix: prefix, Label: "bench", IsActive: true,
		CreatedAt: now, AuthExpiresAt: now.Add(24 * time.Hour)}
	if got, err := db.PollDeviceCode(ctx, p.DeviceCodeHash, now, 0, tok); err != nil || got != store.PollIssued {
		return "", fmt.Errorf("issue the bench agent token: %q, %w", got, err)
	}
	return secret, nil
}
