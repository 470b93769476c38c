# wasmorch — build, run, test. See README.md.
GO       ?= go
BIN      := bin/wasmorch
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/wasmorch/wasmorch/internal/version.Version=$(VERSION)

.PHONY: all build release run test test-unit test-e2e bench bench-scale bench-cloud bench-edge bench-across bench-density proto testdata tour-images vet fmt clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/wasmorch

# Release binaries (docs/edge.md): wasmorch and the slim wasmorch-agent,
# static (CGO off) and stripped, for Linux on amd64, arm64, armv7 and
# riscv64, with their SHA-256 sums in SHA256SUMS. DIST=DIR writes them
# elsewhere.
DIST    ?= dist
# The slim agent leaves out gRPC's request tracing (golang.org/x/net/trace
# and html/template: 2.9 MB of the binary), which it never turns on; the
# e2e tests build it with the same tags (e2e/edge_test.go).
AGENT_TAGS := grpcnotrace
RELEASE := amd64 arm64 armv7 riscv64
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	set -e; for target in $(RELEASE); do \
	  arch=$$target; arm=; \
	  if [ $$target = armv7 ]; then arch=arm; arm=7; fi; \
	  for cmd in wasmorch wasmorch-agent; do \
	    echo "$(DIST)/$$cmd-linux-$$target"; \
	    tags=; if [ $$cmd = wasmorch-agent ]; then tags="$(AGENT_TAGS)"; fi; \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -tags "$$tags" \
	      -ldflags "-s -w $(LDFLAGS)" -o $(DIST)/$$cmd-linux-$$target ./cmd/$$cmd; \
	  done; \
	done
	cd $(DIST) && sha256sum wasmorch-linux-* wasmorch-agent-linux-* > SHA256SUMS
	ls -l $(DIST)

proto:
	protoc -I proto \
	  --plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
	  --plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/wasmorch/v1/wasmorch.proto proto/wasmorch/provider/v1/provider.proto

# Rebuild the Wasm test modules from their sources (wat2wasm, clang, Go).
testdata:
	$(MAKE) -C testdata

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# The whole suite: unit, integration (embedded etcd + wazero in-process) and
# end-to-end (the built binary, driven as a user would).
test: vet
	$(GO) test -count=1 -timeout 15m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# The scale benchmark (issue 17): one `wasmorch server` driven by hollow
# nodes (`wasmorch simulate`) at 10k, 50k and 200k instances; tens of
# minutes. WASMORCH_SCALE_POINTS and WASMORCH_SCALE_NODES change the scale
# (docs/scale.md).
# Issue 16: a warm function and a cold start with the gateway and the
# worker in separate processes, and 10,000 instances on one node, idle
# and logging (figures in BENCHMARKS.md).
bench-across:
	$(GO) test ./e2e -run '^$$' -bench 'FunctionAcrossProcesses' -benchtime 3000x
	$(GO) test ./e2e -run '^$$' -bench 'FunctionColdStartAcrossProcesses' -benchtime 10x

bench-density:
	WASMORCH_DENSITY=10000 WASMORCH_DENSITY_MODULE=sleep.wasm $(GO) test ./integration -run '^$$' -bench '^BenchmarkDensity$$' -benchtime 1x -timeout 30m
	WASMORCH_DENSITY=10000 WASMORCH_DENSITY_MODULE=ticker.wasm $(GO) test ./integration -run '^$$' -bench '^BenchmarkDensity$$' -benchtime 1x -timeout 30m

bench-scale:
	WASMORCH_BENCH_SCALE=1 $(GO) test ./e2e/scale -run '^$$' -bench Scale -benchtime 1x -timeout 90m -v

# The edge benchmarks (issue 19, BENCHMARKS.md "Edge"): the slim agent's
# memory idle and with 100 idle instances, then in a memory cgroup of its
# own limited to 64 MiB with 200 (root; WASMORCH_EDGE_CGROUP=SIZE and
# WASMORCH_EDGE_INSTANCES=N change them).
bench-edge:
	$(GO) test ./e2e -run '^$$' -bench 'AgentMemory|AgentUnderMemoryCgroup' -benchtime 1x -timeout 20m -v

# The cloud controller with the local provider (issue 20): pending instance
# -> new node Ready -> Running, the same deploy onto a running node,
# idle -> node deleted, and a drain that moves an instance before its node
# is deleted, each phase's median over 5 rounds (BENCHMARKS.md).
bench-cloud:
	$(GO) test ./e2e -run '^$$' -bench CloudLocal -benchtime 5x

# The tour's container (README): a tiny static Go program packed into an
# OCI image archive by the repository's own ociarchive package, so that no
# Docker or registry is needed. TOUR=DIR writes it elsewhere.
TOUR ?= bin
tour-images:
	mkdir -p $(TOUR)
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -buildvcs=false -ldflags "-s -w" -o $(TOUR)/tourapp ./testdata/tourapp
	$(GO) run ./internal/mkoci -o $(TOUR)/app-oci.tar -arch $$($(GO) env GOARCH) -name app:tour $(TOUR)/tourapp

# Start the all-in-one, deploy a sample module, print what to try next.
run: build tour-images
	@scripts/run.sh

clean:
	rm -rf bin $(DIST)
