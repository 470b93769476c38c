package certrecords

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestRevokingEndsTheCertificatesStreams: revoking a node's certificates
// puts each on the list a member follows, and ends the streams open with
// them, with the reason; another node's are untouched.
func TestRevokingEndsTheCertificatesStreams(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UnixNano()
	recs := []*v1.CertificateRecord{
		{Serial: "01", Role: string(auth.RoleNode), Name: "pi-1", ExpiresUnixNano: exp},
		{Serial: "02", Role: string(auth.RoleNode), Name: "pi-2", ExpiresUnixNano: exp},
	}
	for _, rec := range recs {
		op, _, err := PutOp(ctx, cli, rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Txn(ctx).Then(op).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	list := NewRevocations(cli, slog.New(slog.DiscardHandler))
	etcdtest.Run(t, func(ctx context.Context) error { list.Run(ctx); return nil })
	if rec, err := list.Lookup(ctx, "01"); err != nil || rec != nil {
		t.Fatalf("Lookup before any revocation = %v, %v; want none", rec, err)
	}
	stream1, cancel1 := context.WithCancelCause(ctx)
	defer list.Track("01", cancel1)()
	stream2, cancel2 := context.WithCancelCause(ctx)
	defer list.Track("02", cancel2)()
	changed := list.Changed()

	ops, unchanged, revoked, err := RevokeOps(ctx, cli, Prefix(auth.RoleNode, "pi-1"), "node pi-1 was removed")
	if err != nil || len(revoked) != 1 || revoked[0].GetSerial() != "01" {
		t.Fatalf("RevokeOps = %v, %v; want the one certificate of pi-1", revoked, err)
	}
	if resp, err := cli.Txn(ctx).If(unchanged).Then(ops...).Commit(); err != nil || !resp.Succeeded {
		t.Fatalf("revoking: %v, %v", resp, err)
	}
	select {
	case <-stream1.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the stream of the revoked certificate was not ended")
	}
	<-changed
	if err := context.Cause(stream1); !errdefs.IsUnauthenticated(err) {
		t.Fatalf("stream ended with %v; want unauthenticated", err)
	}
	if got := context.Cause(stream1).Error(); !strings.Contains(got, "node pi-1 was removed") || !strings.Contains(got, "serial 01") {
		t.Errorf("stream ended with %q; want the serial and the reason", got)
	}
	if rec, err := list.Lookup(ctx, "01"); err != nil || rec.GetReason() != "node pi-1 was removed" {
		t.Errorf("Lookup(01) = %v, %v; want its revocation", rec, err)
	}
	if stream2.Err() != nil {
		t.Error("the stream of another node's certificate was ended")
	}
	if rec, _ := list.Lookup(ctx, "02"); rec != nil {
		t.Errorf("Lookup(02) = %v; want none", rec)
	}
}
