# syntax=docker/dockerfile:1
#
# dialtrap as a container image: a static binary (built as `make build` builds it) on
# distroless, run as a non-root user. Build and run:
#
#   docker build --build-arg VERSION=$(scripts/version.sh) --build-arg COMMIT=$(scripts/version.sh -c) -t dialtrap .
#   docker run -d --name dialtrap -p 5060:5060/udp -p 5060:5060/tcp -p 5061:5061/tcp \
#       -p 127.0.0.1:8082:8082 -e DIALTRAP_API_TOKEN=... -v dialtrap-data:/var/lib/dialtrap dialtrap
#
# compose.yaml runs it with the firewall agent; docs/container.md explains the choices.
# test/container/dockerfile_test.go runs this file's build on the test machine and checks
# what it promises (static binary, non-root, ports, volume, health check).

# The Go of go.mod's go line, exactly: GOTOOLCHAIN=local makes a mismatch fail here instead
# of fetching another toolchain in the middle of the build.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ENV GOTOOLCHAIN=local
WORKDIR /src

# The modules first, in a layer of their own: it is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY cmd ./cmd
COPY internal ./internal
COPY client ./client

# `make build`'s command: static (no cgo), paths trimmed, symbols stripped, version and commit
# stamped. .dockerignore keeps .git out of the context, so COMMIT comes as a build argument.
ARG VERSION=0.1.0
ARG COMMIT=unknown
# Set by BuildKit for the platform built for (docker buildx build --platform linux/arm64).
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -tags "" -ldflags "-s -w -buildid= -X main.version=${VERSION} -X main.commit=${COMMIT}" -o bin/dialtrap ./cmd/dialtrap

# The data directory, copied below owned by the user the node runs as: a new named volume
# mounted there takes this ownership (distroless has no shell to make it in the final stage).
RUN mkdir -p empty/var/lib/dialtrap

# distroless/static rather than scratch: it brings what the binary reads from the system and
# scratch lacks (CA certificates for an https webhook, OAuth2 endpoint or PostgreSQL over TLS;
# time zones for import --tz; /etc/passwd with the nonroot user; /tmp), kept patched by its
# maintainers, and still no shell, package manager or libc (about 2 MB).
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=0.1.0
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="dialtrap" \
      org.opencontainers.image.description="SIP honeypot and VoIP fraud-detection node" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"

COPY --from=build /src/bin/dialtrap /usr/local/bin/dialtrap
COPY --from=build --chown=65532:65532 /src/empty/var/lib/dialtrap /var/lib/dialtrap

# nonroot (65532) of distroless, by number so that runAsNonRoot checks can see it. The SIP
# ports are above 1023: no capability is needed to bind them.
USER 65532:65532
WORKDIR /var/lib/dialtrap
VOLUME /var/lib/dialtrap

# SIP over UDP and TCP, SIP over TLS, the REST API, and peer-to-peer (QUIC and TCP, with -p).
EXPOSE 5060/udp 5060/tcp 5061/tcp 8082/tcp 4222/tcp 4222/udp

# The defaults are environment variables rather than CMD arguments: `docker run IMAGE -r -p`
# adds to them instead of replacing them, -e DIALTRAP_JSON_LOG=false takes one away, and the
# subcommands (docker exec dialtrap dialtrap export, top, health) read the same ones, so they
# find the database and the API.
#
# The API listens on every address of the container, since a port published by Docker
# reaches the container's own interface, never its loopback. It serves what the trap has
# collected (and its dashboard data), so: give it a token (-e DIALTRAP_API_TOKEN=...; the node
# warns at start when there is none) and publish it on the host's loopback only
# (-p 127.0.0.1:8082:8082), as compose.yaml does. A plain -p 8082:8082 opens it to the
# world, and Docker's published ports pass by host firewalls such as ufw.
ENV DIALTRAP_DATA_DIR=/var/lib/dialtrap \
    DIALTRAP_API=true \
    DIALTRAP_API_ADDR=0.0.0.0:8082 \
    DIALTRAP_JSON_LOG=true

# The binary itself asks the API's /health-check (no token needed; the image has no curl).
# It finds the API from DIALTRAP_API_ADDR, so it follows a changed address; a node run with
# DIALTRAP_API=false must turn the check off (--no-healthcheck, or healthcheck: disable).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/dialtrap", "health", "--timeout", "4s"]

ENTRYPOINT ["/usr/local/bin/dialtrap"]
