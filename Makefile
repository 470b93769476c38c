# wasmorch — build, run, test. See README.md.
GO       ?= go
BIN      := bin/wasmorch
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/wasmorch/wasmorch/internal/version.Version=$(VERSION)

.PHONY: all build run test test-unit test-e2e bench proto testdata vet fmt clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/wasmorch

proto:
	protoc -I proto \
	  --plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
	  --plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/wasmorch/v1/wasmorch.proto
