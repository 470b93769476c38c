package scale

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// controlAPI is every call the benchmark makes to the control plane, in
// one place, so that a list that pages (limit + continue token) or a
// Watch replacing the polling changes this file only. It dials as the CLI
// does: the admin credential the server wrote, gRPC's default 4 MiB limit
// on a reply.
type controlAPI struct {
	conn *grpc.ClientConn
	c    pb.ControlClient
}

// callTimeout bounds any one call: at the larger scale points a call can
// take seconds, never minutes.
const callTimeout = 2 * time.Minute

func dialAPI(addr, credentialPath string) (*controlAPI, error) {
	cred, err := auth.ReadCredential(credentialPath)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := cred.ClientTLS()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		return nil, err
	}
	return &controlAPI{conn: conn, c: pb.NewControlClient(conn)}, nil
}

func (a *controlAPI) Close() error { return a.conn.Close() }

func call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

func (a *controlAPI) version(ctx context.Context) error {
	ctx, cancel := call(ctx)
	defer cancel()
	_, err := a.c.Version(ctx, &pb.VersionRequest{})
	return err
}

func (a *controlAPI) createToken(ctx context.Context) (string, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := a.c.CreateToken(ctx, &pb.CreateTokenRequest{Description: "scale benchmark"})
	return resp.GetToken(), err
}

// upload stores a module and returns its digest.
func (a *controlAPI) upload(ctx context.Context, module []byte) (string, error) {
	sum := sha256.Sum256(module)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	ctx, cancel := call(ctx)
	defer cancel()
	up, err := a.c.UploadBlob(ctx)
	if err != nil {
		return "", err
	}
	if err := up.Send(&pb.UploadRequest{Part: &pb.UploadRequest_Header{Header: &pb.UploadHeader{Digest: digest, Size: int64(len(module))}}}); err != nil {
		return "", err
	}
	if err := up.Send(&pb.UploadRequest{Part: &pb.UploadRequest_Chunk{Chunk: module}}); err != nil {
		return "", err
	}
	_, err = up.CloseAndRecv()
	return digest, err
}

// apply creates workload name with replicas instances of the module.
func (a *controlAPI) apply(ctx context.Context, name, digest string, replicas int) error {
	ctx, cancel := call(ctx)
	defer cancel()
	_, err := a.c.ApplyWorkload(ctx, &pb.ApplyWorkloadRequest{Name: name, Spec: &pb.WorkloadSpec{ModuleDigest: digest, Replicas: int32(replicas)}})
	if err != nil {
		return fmt.Errorf("apply %s: %w", name, err)
	}
	return nil
}

// getWorkload is the single-object read.
func (a *controlAPI) getWorkload(ctx context.Context, name string) error {
	ctx, cancel := call(ctx)
	defer cancel()
	_, err := a.c.GetWorkload(ctx, &pb.GetWorkloadRequest{Name: name})
	return err
}

// workloadInstances lists one workload's instances (a filtered list).
func (a *controlAPI) workloadInstances(ctx context.Context, name string) ([]*pb.InstanceView, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := a.c.ListInstances(ctx, &pb.ListInstancesRequest{Workload: name})
	return resp.GetInstances(), err
}

// allInstances lists every instance of the cluster and returns how many
// there are.
func (a *controlAPI) allInstances(ctx context.Context) (int, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := a.c.ListInstances(ctx, &pb.ListInstancesRequest{})
	return len(resp.GetInstances()), err
}

// readyInstances sums the ready instances of every workload (a small
// answer however many instances there are).
func (a *controlAPI) readyInstances(ctx context.Context) (int, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := a.c.ListWorkloads(ctx, &pb.ListWorkloadsRequest{})
	ready := 0
	for _, w := range resp.GetWorkloads() {
		ready += int(w.GetReady())
	}
	return ready, err
}

// readyNodes counts the Ready nodes.
func (a *controlAPI) readyNodes(ctx context.Context) (int, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := a.c.ListNodes(ctx, &pb.ListNodesRequest{})
	ready := 0
	for _, n := range resp.GetNodes() {
		if n.GetReady() {
			ready++
		}
	}
	return ready, err
}

func (a *controlAPI) cordon(ctx context.Context, node string, on bool) error {
	ctx, cancel := call(ctx)
	defer cancel()
	var err error
	if on {
		_, err = a.c.CordonNode(ctx, &pb.NodeRequest{Name: node})
	} else {
		_, err = a.c.UncordonNode(ctx, &pb.NodeRequest{Name: node})
	}
	return err
}
