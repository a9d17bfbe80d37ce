# The two commands of README.md: `make run` and `make test`.
GO      ?= go
VERSION ?= 0.1.0
COMMIT  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOBIN   := $(shell $(GO) env GOPATH)/bin

.PHONY: run build test deps lint unit e2e fuzz fuzz-list bench bench-p2p bench-feeds bench-nft bench-bgp bench-policy bench-fleet soak clean

## run: start a node with the embedded defaults (SIP on :5060 UDP/TCP, TLS on :5061). It runs
## in RUN_DIR, so its files (node id and key, TLS certificate, database, JSON log) land there,
## never loose in the checkout; data/ is in .gitignore. RUN_ARGS adds flags, e.g. RUN_ARGS=-rjv.
RUN_DIR  ?= data
RUN_ARGS ?=
run: build
	mkdir -p '$(RUN_DIR)' && cd '$(RUN_DIR)' && exec '$(CURDIR)/bin/dialtrap' $(RUN_ARGS)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dialtrap ./cmd/dialtrap

## test: install the tools the tests use, lint, then run every test (unit with -race, end-to-end)
test: deps lint unit e2e

deps:
	./scripts/test-deps.sh

## lint and unit also check the build without peer-to-peer (-tags nop2p, see docs/nop2p.md):
## vet and staticcheck of every package, and the tests of the packages the tag changes.
NOP2P_PKGS := ./internal/node ./cmd/dialtrap
NOP2P_RUN  := NoP2P|BGPAndPolicyLifecycle|VersionLine|PeersCommand

lint:
	@test -z "$$(gofmt -l cmd internal test bench)" || { gofmt -l cmd internal test bench; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags nop2p ./...
	$(GOBIN)/staticcheck ./...
	$(GOBIN)/staticcheck -tags nop2p ./...

unit:
	$(GO) test -race -count=1 ./internal/... ./cmd/...
	$(GO) test -race -count=1 -tags nop2p -run '$(NOP2P_RUN)' $(NOP2P_PKGS)

e2e:
	$(GO) test -count=1 ./test/...

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
	rm -rf bin
