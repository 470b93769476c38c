package store

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestAWriteOverEtcdsLimitIsInvalidNotUnavailable: etcd refuses a request
// over its size limit every time; a client told "unavailable" would retry
// forever (the CLI said "try again in a moment" to a 1.9 MB spec).
func TestAWriteOverEtcdsLimitIsInvalidNotUnavailable(t *testing.T) {
	s := New(etcdtest.Start(t))
	cfg := &v1.Config{Name: "big", Data: map[string]string{"A": strings.Repeat("x", 3<<20)}}
	_, err := s.Configs.Create(context.Background(), "big", cfg)
	if !errdefs.IsInvalidArgument(err) || errdefs.IsUnavailable(err) {
		t.Fatalf("Create = %v, want InvalidArgument", err)
	}
	if want := "the write is larger than the 2 MiB etcd takes in one request"; err.Error() != want {
		t.Fatalf("Create = %q, want %q", err, want)
	}
	if code := status.Code(errdefs.ToGRPC(err)); code != codes.InvalidArgument {
		t.Fatalf("at the API edge: %v, want InvalidArgument", code)
	}

	_, err = s.Client.Put(context.Background(), "k", strings.Repeat("x", 3<<20))
	if err := EtcdError(`write workload "big"`, err); err.Error() != `write workload "big": the write is larger than the 2 MiB etcd takes in one request` {
		t.Fatalf("EtcdError = %q", err)
	}
}
