package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/llmproxy/llm-proxy/internal/config"
	"github.com/llmproxy/llm-proxy/internal/memory"
	"github.com/llmproxy/llm-proxy/internal/proxy"
	"github.com/llmproxy/llm-proxy/internal/secret"
	"github.com/llmproxy/llm-proxy/internal/store"
	"github.com/llmproxy/llm-proxy/internal/telemetry"
)

// newMemory builds cross-session memory and its summariser (SPEC §6.6), or
// returns nils when MEMORY_ENABLED is false.
func newMemory(cfg *config.Config, st store.Store, cipher *secret.Cipher, fwd *proxy.Forwarder, rec memory.Recorder,
	metrics *telemetry.Metrics, logger *slog.Logger) (*memory.Memory, *memory.Summariser, error) {
	mc := cfg.Memory
	if !mc.Enabled {
		return nil, nil, nil
	}
	patterns := mc.Redact
	if mc.RedactDefault {
		patterns = append(memory.DefaultRedact[:len(memory.DefaultRedact):len(memory.DefaultRedact)], patterns...)
	}
	red, err := memory.NewRedactor(patterns)
	if err != nil {
		return nil, nil, err
	}
	mem := memory.New(st, memory.Options{MaxInject: mc.MaxInject, MinScore: mc.MinScore, MaxBytes: mc.MaxBytes,
		Redactor: red, Logger: logger})
	metrics.RegisterMemory(func() telemetry.MemoryStats {
		s := mem.Stats()
		return telemetry.MemoryStats{Queued: s.Queued, Dropped: s.Dropped, Written: s.Written,
			WriteErrors: s.WriteErrors, Injected: s.Injected, Errors: s.LookupErrors}
	})
	host, _ := os.Hostname()
	sum := memory.NewSummariser(st, projectUpstreams{st: st, cipher: cipher}, fwd, rec, memory.SummariserOptions{
		Worker: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8]), IdleTimeout: mc.IdleTimeout,
		Model: mc.SummaryModel, Redactor: red, Logger: logger,
	})
	logger.Info("memory enabled", "idle_timeout", mc.IdleTimeout.String(), "max_inject", mc.MaxInject,
		"max_bytes", mc.MaxBytes, "redact_patterns", len(patterns))
	return mem, sum, nil
}

// memoryRetention is MEMORY_RETENTION_DAYS as a duration (0 keeps).
func memoryRetention(cfg *config.Config) time.Duration {
	return time.Duration(cfg.Memory.RetentionDays) * 24 * time.Hour
}

// projectUpstreams resolves a project's upstream for the summariser.
type projectUpstreams struct {
	st     store.Store
	cipher *secret.Cipher
}

// errProjectInactive: the session's project was deactivated; its sessions
// are not summarised with its key.
var errProjectInactive = errors.New("project is inactive")

func (u projectUpstreams) Upstream(ctx context.Context, projectID string) (proxy.Upstream, error) {
	p, err := u.st.GetProject(ctx, projectID)
	if err != nil {
		return proxy.Upstream{}, err
	}
	if !p.IsActive {
		return proxy.Upstream{}, errProjectInactive
	}
	key, err := u.cipher.Decrypt(p.APIKeyEncrypted)
	if err != nil {
		return proxy.Upstream{}, fmt.Errorf("decrypt upstream key: %w", err)
	}
	return proxy.Upstream{Provider: p.Provider, BaseURL: p.BaseURL, APIKey: string(key), APIVersion: p.APIVersion}, nil
}
