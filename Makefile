# LLM Proxy — `make help` lists the targets.
GO        ?= go
BIN       ?= bin
export CGO_ENABLED ?= 0

.PHONY: help build run test lint tidy-check bench bench-soak bench-usage bench-scale

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/proxy and bin/migrate (static, CGO_ENABLED=0)
	$(GO) build -trimpath -o $(BIN)/proxy ./cmd/proxy
	$(GO) build -trimpath -o $(BIN)/migrate ./cmd/migrate

run: build ## build, then run bin/proxy on SQLite with no configuration (./var/db/proxy.db); Ctrl-C stops it
	$(BIN)/proxy

test: ## everything CI runs: gofmt, vet, go test -race against real PostgreSQL + Redis
	bash .ci/test

lint: ## gofmt, go vet, staticcheck (when installed), go mod tidy check
	@test -z "$$(gofmt -l cmd internal db)" || { gofmt -l cmd internal db; exit 1; }
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed (go install honnef.co/go/tools/cmd/staticcheck@latest)"; fi
	$(MAKE) tidy-check

tidy-check: ## fail when go mod tidy would change go.mod/go.sum (the product's and internal/testkit/deploycheck's)
	$(GO) mod tidy -diff
	cd internal/testkit/deploycheck && $(GO) mod tidy -diff

bench: ## run the benchmark (< 5 min): baseline reverse proxy vs the proxy on SQLite and on PostgreSQL + Redis; flags in BENCH_FLAGS (e.g. '-skip-cluster -soak 0')
	$(GO) test -run '^TestBench$$' -count=1 -timeout 30m -v ./internal/testkit/bench -args -bench.run $(BENCH_FLAGS)

bench-soak: ## the 10-minute RSS soak of set-up (a) at chat c=32, and its start-up time (~11 min)
	$(GO) test -run '^TestBench$$' -count=1 -timeout 30m -v ./internal/testkit/bench -args -bench.run -soak-only -soak 10m -budget 12m -skip-cluster $(BENCH_FLAGS)

bench-usage: ## usage at scale on PostgreSQL (TEST_DATABASE_URL or BENCH_DATABASE_URL): fill 10M rows over 90 days, time /manage/usage and retention under a concurrent writer (~5 min); flags in BENCH_FLAGS (e.g. '-usage.rows 1000000')
	$(GO) test -run '^TestBenchUsage$$' -count=1 -timeout 30m -v ./internal/testkit/bench -args -bench.usage $(BENCH_FLAGS)

bench-scale: ## tokens at scale on PostgreSQL + Redis (TEST_DATABASE_URL/TEST_REDIS_URL or BENCH_*): fill 1M tokens over 10k projects, time readiness, count cold-token round trips, compare warm tokens with an empty database (~3 min); flags in BENCH_FLAGS (e.g. '-scale.tokens 100000')
	$(GO) test -run '^TestBenchScale$$' -count=1 -timeout 30m -v ./internal/testkit/bench -args -bench.scale $(BENCH_FLAGS)
