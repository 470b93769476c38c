package scale

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// controlAPI is every call the benchmark makes to the control plane, in
// one place, so that how lists page (limit + continue token, followed to
// the end here) or a Watch replacing the polling changes this file only.
// It dials as the CLI does: the admin credential the server wrote, gRPC's
// default 4 MiB limit on a reply.
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
	// Hollow nodes choose their zone (and carry simulated=true) at their join.
	resp, err := a.c.CreateToken(ctx, &pb.CreateTokenRequest{Description: "scale benchmark", Labels: map[string]string{"simulated": "true", "zone": "*"}})
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
	if err := up.Send(&pb.UploadRequest{Part: &pb.UploadRequest_Chunk{Chunk: module}}); err != nil && !errors.Is(err, io.EOF) {
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

// maxPages bounds a paged list, so that a server that never stops
// sending continue tokens ends the benchmark rather than hangs it.
const maxPages = 100000

// listInstances lists the instances req asks for, page after page, each
// page a call of its own.
func (a *controlAPI) listInstances(ctx context.Context, req *pb.ListInstancesRequest) ([]*pb.InstanceView, error) {
	var out []*pb.InstanceView
	for range maxPages {
		cctx, cancel := call(ctx)
		resp, err := a.c.ListInstances(cctx, req)
		cancel()
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetInstances()...)
		if resp.GetContinue() == "" {
			return out, nil
		}
		req.Continue = resp.GetContinue()
	}
	return out, fmt.Errorf("ListInstances: more than %d pages", maxPages)
}

// workloadInstances lists one workload's instances (a filtered list).
func (a *controlAPI) workloadInstances(ctx context.Context, name string) ([]*pb.InstanceView, error) {
	return a.listInstances(ctx, &pb.ListInstancesRequest{Workload: name})
}

// allInstances lists every instance of the cluster and returns how many
// there are.
func (a *controlAPI) allInstances(ctx context.Context) (int, error) {
	is, err := a.listInstances(ctx, &pb.ListInstancesRequest{})
	return len(is), err
}

// readyInstances sums the ready instances of every workload (a small
// answer however many instances there are).
func (a *controlAPI) readyInstances(ctx context.Context) (int, error) {
	ready := 0
	req := &pb.ListWorkloadsRequest{}
	for range maxPages {
		cctx, cancel := call(ctx)
		resp, err := a.c.ListWorkloads(cctx, req)
		cancel()
		if err != nil {
			return ready, err
		}
		for _, w := range resp.GetWorkloads() {
			ready += int(w.GetReady())
		}
		if resp.GetContinue() == "" {
			return ready, nil
		}
		req.Continue = resp.GetContinue()
	}
	return ready, fmt.Errorf("ListWorkloads: more than %d pages", maxPages)
}

// readyNodes counts the Ready nodes.
func (a *controlAPI) readyNodes(ctx context.Context) (int, error) {
	ready := 0
	req := &pb.ListNodesRequest{}
	for range maxPages {
		cctx, cancel := call(ctx)
		resp, err := a.c.ListNodes(cctx, req)
		cancel()
		if err != nil {
			return ready, err
		}
		for _, n := range resp.GetNodes() {
			if n.GetReady() {
				ready++
			}
		}
		if resp.GetContinue() == "" {
			return ready, nil
		}
		req.Continue = resp.GetContinue()
	}
	return ready, fmt.Errorf("ListNodes: more than %d pages", maxPages)
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

// boundWatch follows one workload's instances through the API's Watch
// and counts those bound to a node: how the throughput figure learns of
// each binding as it is stored, rather than by listing every instance
// again and again (whose own cost, at 10,000 instances a page of 500 at a
// time, would be measured with it).
type boundWatch struct {
	cancel context.CancelFunc
	bound  chan int // the count after each batch of events
	err    chan error
}

// watchBound starts following workload's instances from now, before it
// is applied.
func (a *controlAPI) watchBound(ctx context.Context, workload string) (*boundWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := a.c.Watch(ctx, &pb.WatchRequest{Kind: pb.WatchKind_WATCH_KIND_INSTANCES, Workload: workload})
	if err != nil {
		cancel()
		return nil, err
	}
	// The first bookmark says the watch is in place.
	if ev, err := stream.Recv(); err != nil {
		cancel()
		return nil, err
	} else if ev.GetType() != pb.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
		cancel()
		return nil, fmt.Errorf("Watch began with %s, not a bookmark", ev.GetType())
	}
	w := &boundWatch{cancel: cancel, bound: make(chan int, 1), err: make(chan error, 1)}
	go func() {
		seen := map[string]bool{}
		for {
			ev, err := stream.Recv()
			if err != nil {
				w.err <- err
				return
			}
			if iv := ev.GetInstance(); iv != nil && iv.GetInstance().GetNode() != "" && ev.GetType() != pb.WatchEventType_WATCH_EVENT_TYPE_DELETED {
				seen[iv.GetInstance().GetId()] = true
			}
			if ev.GetType() == pb.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
				select { // the latest count replaces one not read yet
				case <-w.bound:
				default:
				}
				w.bound <- len(seen)
			}
		}
	}()
	return w, nil
}

func (w *boundWatch) stop() { w.cancel() }

// scheduledAt reads a workload's Scheduled events (the controller records
// one after each round's bindings are stored: "placed N instances: ...")
// and returns how many they placed and when the last was recorded.
func (a *controlAPI) scheduledAt(ctx context.Context, workload string) (placed int, last time.Time, err error) {
	req := &pb.ListEventsRequest{Object: "workload/" + workload}
	for range maxPages {
		cctx, cancel := call(ctx)
		resp, err := a.c.ListEvents(cctx, req)
		cancel()
		if err != nil {
			return placed, last, err
		}
		for _, ev := range resp.GetEvents() {
			var n int
			if ev.GetReason() != "Scheduled" {
				continue
			}
			if _, err := fmt.Sscanf(ev.GetMessage(), "placed %d instance", &n); err != nil {
				continue
			}
			placed += n
			if t := time.Unix(0, ev.GetUnixNano()); t.After(last) {
				last = t
			}
		}
		if resp.GetContinue() == "" {
			return placed, last, nil
		}
		req.Continue = resp.GetContinue()
	}
	return placed, last, fmt.Errorf("ListEvents: more than %d pages", maxPages)
}
