# The two commands of README.md: `make run` and `make test`.
GO      ?= go
# The version and commit stamped into the binary and the packages (scripts/version.sh: from
# git describe, 0.1.0 before the first vX.Y.Z tag); `make VERSION=1.2.3` overrides.
VERSION ?= $(shell ./scripts/version.sh)
COMMIT  ?= $(shell ./scripts/version.sh -c)
VERSION := $(VERSION)
COMMIT  := $(COMMIT)
# Reproducible: no paths (-trimpath), no build ID, no VCS stamp beyond the commit, no cgo.
# Two builds of one commit are byte-identical (make repro-check).
LDFLAGS := -s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOBIN   := $(shell $(GO) env GOPATH)/bin
# ARCH from the environment is ignored: kernel and Yocto shells export ARCH=x86_64, which is
# no GOARCH. `make dist ARCH=arm64` sets it.
ifeq ($(origin ARCH),environment)
ARCH    := $(shell $(GO) env GOARCH)
endif
ARCH    ?= $(shell $(GO) env GOARCH)
ARCH    := $(ARCH)
# gobuild OUT,TAGS: the one build command of build, dist and repro-check.
gobuild = CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -buildvcs=false \
	-tags '$(2)' -ldflags '$(LDFLAGS)' -o '$(1)' ./cmd/dialtrap

.PHONY: run build binary dist dist-inputs repro-check test deps lint unit e2e pkgtest fuzz fuzz-list bench bench-p2p bench-feeds bench-nft bench-bgp bench-policy bench-fleet soak clean

## run: start a node with the embedded defaults (SIP on :5060 UDP/TCP, TLS on :5061). It runs
## in RUN_DIR, so its files (node id and key, TLS certificate, database, JSON log) land there,
## never loose in the checkout; data/ is in .gitignore. RUN_ARGS adds flags, e.g. RUN_ARGS=-rjv.
RUN_DIR  ?= data
RUN_ARGS ?=
run: build
	mkdir -p '$(RUN_DIR)' && cd '$(RUN_DIR)' && exec '$(CURDIR)/bin/dialtrap' $(RUN_ARGS)

build:
	$(call gobuild,bin/dialtrap,)

## binary: OUT built with the build tags TAGS (what repro-check builds)
OUT  ?= bin/dialtrap
TAGS ?=
binary:
	$(call gobuild,$(OUT),$(TAGS))

## dist: both binaries (dist/dialtrap, and dist/dialtrap-nop2p without the peer-to-peer
## network), then the .deb and .rpm of the default one (packaging/nfpm.yaml, built by nfpm from
## tools/go.mod), with their sizes. ARCH=arm64 makes the arm64 ones.
DIST ?= dist
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
SOURCE_DATE_EPOCH := $(SOURCE_DATE_EPOCH)
NFPM := GOOS= GOARCH= $(GO) tool -modfile=tools/go.mod nfpm
DIST_INPUTS := contrib/man/dialtrap.1 contrib/completions/dialtrap.bash contrib/completions/_dialtrap contrib/completions/dialtrap.fish
dist: dist-inputs
	rm -rf '$(DIST)/stage' '$(DIST)'/dialtrap*.deb '$(DIST)'/dialtrap*.rpm
	mkdir -p '$(DIST)/stage'
	$(call gobuild,$(DIST)/dialtrap,)
	$(call gobuild,$(DIST)/dialtrap-nop2p,nop2p)
	gzip -n -9 <contrib/man/dialtrap.1 >'$(DIST)/stage/dialtrap.1.gz'
	cp -R docs '$(DIST)/stage/docs' && chmod -R u=rwX,go=rX '$(DIST)/stage/docs'
	@set -e; for p in deb rpm; do \
		echo "nfpm: $$p of dialtrap $(VERSION) ($(ARCH))"; \
		VERSION='$(VERSION)' ARCH='$(ARCH)' DIST='$(DIST)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' \
			$(NFPM) package -f packaging/nfpm.yaml -p $$p -t '$(DIST)/' >'$(DIST)/stage/nfpm.log' 2>&1 || \
			{ cat '$(DIST)/stage/nfpm.log' >&2; echo "dist: nfpm could not make the $$p package (above)" >&2; exit 1; }; \
	done
	@cd '$(DIST)' && for f in dialtrap dialtrap-nop2p dialtrap*.deb dialtrap*.rpm; do \
		printf '%-40s %10d bytes %8s\n' "$$f" "$$(stat -c %s "$$f")" "$$(numfmt --to=iec --suffix=B "$$(stat -c %s "$$f")")"; \
	done

## dist-inputs: the man page and completions the packages carry must be in the checkout
dist-inputs:
	@missing=""; for f in $(DIST_INPUTS); do [ -s "$$f" ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then echo "dist: missing$$missing: the packages install the man page and the shell completions from these committed files" >&2; exit 1; fi

## repro-check: build the binary twice, the second time from a copy of the tree at another
## path with an empty GOCACHE, and fail unless the two are byte-identical (REPRO_TAGS=nop2p
## checks that build)
REPRO_TAGS ?=
repro-check:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' TAGS='$(REPRO_TAGS)' ./scripts/repro-check.sh

## test: install the tools the tests use, lint, run every test (unit with -race, end-to-end,
## the package test), then check that the build is reproducible
test: deps lint unit e2e pkgtest repro-check

deps:
	./scripts/test-deps.sh

## lint and unit also check the build without peer-to-peer (-tags nop2p, see docs/nop2p.md):
## vet and staticcheck of every package, and the tests of the packages the tag changes.
NOP2P_PKGS := ./internal/node ./cmd/dialtrap
NOP2P_RUN  := NoP2P|BGPAndPolicyLifecycle|VersionLine|PeersCommand|MalformedPeerAddresses

lint:
	@test -z "$$(gofmt -l cmd internal test bench)" || { gofmt -l cmd internal test bench; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags nop2p ./...
	$(GOBIN)/staticcheck ./...
	$(GOBIN)/staticcheck -tags nop2p ./...
	CGO_ENABLED=1 $(GO) vet -tags opendht ./internal/opendht ./internal/node ./test/opendht ./cmd/dialtrap
	CGO_ENABLED=1 $(GOBIN)/staticcheck -tags opendht ./internal/opendht ./internal/node ./test/opendht

unit:
	$(GO) test -race -count=1 ./internal/... ./cmd/... ./client/... ./examples/...
	$(GO) test -race -count=1 -tags nop2p -run '$(NOP2P_RUN)' $(NOP2P_PKGS)
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags opendht ./internal/opendht
	CGO_ENABLED=1 $(GO) test -count=1 -tags opendht -run OpenDHT ./internal/node

# The package test (test/pkg) runs on its own after the others: its builds would load the CPUs
# the end-to-end tests' timings count on.
e2e:
	$(GO) test -count=1 $$($(GO) list ./test/... | grep -v '/test/pkg$$')
	CGO_ENABLED=1 $(GO) test -count=1 -tags opendht ./test/opendht

## pkgtest: build the .deb and .rpm (make dist), install the .deb with dpkg, run and probe its
## node, remove and purge it (root; see packaging/README.md)
pkgtest:
	$(GO) test -count=1 -timeout 20m ./test/pkg

## fuzz: run every fuzz target of every package (found with go test -list) for FUZZTIME each
FUZZTIME ?= 60s
fuzz:
	@set -e; $(MAKE) -s fuzz-list | while read -r pkg target; do \
		echo "fuzz: $$pkg $$target ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	done

## fuzz-list: every fuzz target, one "package target" a line
fuzz-list:
	@for pkg in $$($(GO) list ./...); do \
		$(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' | sed "s|^|$$pkg |"; \
	done

## bench: capture benchmark (see bench/README.md)
bench: build
	$(GO) run ./bench/capture -bin ./bin/dialtrap

## bench-bgp: 100,000 blackhole routes from the speaker into a real BIRD, against gobgpd fed
## the same set by its own CLI (gobgp mrt inject) in the same run (see bench/README.md)
bench-bgp:
	$(GO) test -run '^$$' -bench Announce100k -benchtime 1x -count 3 -timeout 20m ./internal/bgp
	$(GO) test -run '^$$' -bench BGPFullSync -benchtime 1x -count 3 -timeout 20m ./internal/node

## bench-policy: the SIP policy agent at 10,000 INVITE/s from SIPp and at SIPp's ceiling,
## exact and national match, against a bare 302 responder (see docs/policy-agent.md)
bench-policy:
	$(GO) run ./bench/policy

## bench-fleet: 10 writers into one PostgreSQL (a server of its own) and SQLite side by side,
## with lookup latency, on a store of 10 million events (see docs/postgresql.md)
bench-fleet:
	./bench/fleet/run.sh

## bench-feeds: 100,000 addresses in each feed format against a bare SQLite scan, then the
## agent's full sync in a network namespace (root) against nft -f (see bench/README.md)
bench-feeds: build
	$(GO) run ./bench/feeds -bin ./bin/dialtrap

## bench-nft: 100,000 elements into an nftables set through internal/firewall, against nft -f (root)
bench-nft:
	$(GO) run ./bench/nftapply -runs 5

## soak: SOAK (10m) of mixed hostile traffic against a node, then peak RSS, peak WAL, lookup
## latency, events lost and integrity_check (see bench/README.md; not part of make test)
SOAK ?= 10m
soak: build
	$(GO) run ./bench/soak -bin ./bin/dialtrap -duration $(SOAK)

## bench-p2p: event sharing between N in-process nodes vs bare gossipsub (see bench/README.md)
bench-p2p:
	$(GO) run ./bench/p2p

clean:
	rm -rf bin dist
