package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/logstore"
)

// logChunkSize is the most output one LogChunk carries.
const logChunkSize = 32 << 10

// logService is the worker's gRPC service: it serves instance output to the
// control plane, and what instances use (usage.go).
type logService struct {
	pb.UnimplementedWorkerServer
	logs  *logstore.Store
	usage func(context.Context, *pb.UsageRequest) (*pb.UsageReport, error)
}

// InstanceLogs streams the kept output of each requested instance this
// worker holds, oldest first, skipping the others. With follow, it then
// streams what each writes, waiting for those it does not hold yet, until
// the caller ends the call or every instance is gone.
func (s *logService) InstanceLogs(req *pb.InstanceLogsRequest, stream grpc.ServerStreamingServer[pb.LogChunk]) error {
	opts := logstore.ReadOptions{TailLines: req.GetTailLines(), TailBytes: req.GetTailBytes(), Timestamps: req.GetTimestamps()}
	if req.GetSinceUnixNano() > 0 {
		opts.Since = time.Unix(0, req.GetSinceUnixNano())
	}
	if req.GetTailLines() < -1 || req.GetTailBytes() < 0 {
		return errdefs.ToGRPC(errdefs.Invalidf("tail_lines must be -1 or more and tail_bytes 0 or more"))
	}
	if !req.GetFollow() {
		for _, id := range req.GetInstances() {
			l := s.logs.Get(id)
			if l == nil {
				continue
			}
			b, err := l.Read(opts)
			if err != nil {
				return errdefs.ToGRPC(err)
			}
			if err := sendChunks(id, b, stream.Send); err != nil {
				return err
			}
		}
		return nil
	}
	// Following: one goroutine per instance, sending in turn.
	var mu sync.Mutex
	send := func(c *pb.LogChunk) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(c)
	}
	g, ctx := errgroup.WithContext(stream.Context())
	for _, id := range req.GetInstances() {
		g.Go(func() error { return follow(ctx, s.logs, id, opts, send) })
	}
	return errdefs.ToGRPC(g.Wait())
}

// follow sends one instance's kept output, then what it writes, until
// its log is removed or ctx ends (nil either way).
func follow(ctx context.Context, logs *logstore.Store, id string, opts logstore.ReadOptions, send func(*pb.LogChunk) error) error {
	l := logs.Wait(ctx, id)
	if l == nil {
		return nil
	}
	kept, f, err := l.Follow(opts)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := sendChunks(id, kept, send); err != nil {
		return err
	}
	for {
		c, err := f.Next(ctx)
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if c.Skipped > 0 {
			if err := send(&pb.LogChunk{Instance: id, Notice: fmt.Sprintf("%d bytes of output skipped: the reader fell behind", c.Skipped)}); err != nil {
				return err
			}
		}
		if err := sendChunks(id, c.Data, send); err != nil {
			return err
		}
	}
}

// sendChunks sends b in chunks of at most logChunkSize.
func sendChunks(id string, b []byte, send func(*pb.LogChunk) error) error {
	for len(b) > 0 {
		n := min(len(b), logChunkSize)
		// A sent message must not change afterwards: b is never written again.
		if err := send(&pb.LogChunk{Instance: id, Data: b[:n:n]}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// Usage reports what the requested instances and the node use.
func (s *logService) Usage(ctx context.Context, req *pb.UsageRequest) (*pb.UsageReport, error) {
	if s.usage == nil {
		return nil, errdefs.ToGRPC(errdefs.Unavailablef("this worker does not measure usage"))
	}
	r, err := s.usage(ctx, req)
	return r, errdefs.ToGRPC(err)
}
