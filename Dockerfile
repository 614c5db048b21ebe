# syntax=docker/dockerfile:1
#
# One image holding both static binaries: /usr/local/bin/proxy (the
# entrypoint) and /usr/local/bin/migrate (run it with --entrypoint or as the
# container command in a Job / initContainer).
#
#   docker build -t llm-proxy .
#   docker run -p 8080:8080 -v llm-proxy-data:/app/var llm-proxy
#
# The runtime image has no shell and no curl, so there is no HEALTHCHECK:
# orchestrators probe GET /healthz (liveness) and GET /readyz (readiness) on
# port 8080 (see helm/ and k8s/; docker-compose.yml checks from the load
# balancer).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so source edits reuse the module layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
# Pure Go (modernc.org/sqlite): static binaries that need no libc.
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/proxy ./cmd/proxy && \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/migrate ./cmd/migrate
# The default SQLite database lives in /app/var/db: create it owned by the
# runtime user, since the runtime image has no shell to do it.
RUN mkdir -p /out/var/db

# static-debian13 holds CA certificates (for HTTPS upstreams) and tzdata;
# the :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian13:nonroot
WORKDIR /app
COPY --from=build /out/proxy /out/migrate /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/var /app/var
USER 65532:65532
ENV LISTEN_ADDR=:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/proxy"]
