package worker

import (
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/logstore"
)

// logChunkSize is the most output one LogChunk carries.
const logChunkSize = 32 << 10

// logService is the worker's gRPC service: it serves instance output to the
// control plane.
type logService struct {
	pb.UnimplementedWorkerServer
	logs *logstore.Store
}

// InstanceLogs streams the kept output of each requested instance this
// worker holds, oldest first, skipping the others.
func (s *logService) InstanceLogs(req *pb.InstanceLogsRequest, stream grpc.ServerStreamingServer[pb.LogChunk]) error {
	for _, id := range req.GetInstances() {
		l := s.logs.Get(id)
		if l == nil {
			continue
		}
		if err := sendLog(id, l, req.GetTailBytes(), stream); err != nil {
			return errdefs.ToGRPC(err)
		}
	}
	return nil
}

func sendLog(id string, l *logstore.Log, tail int64, stream grpc.ServerStreamingServer[pb.LogChunk]) error {
	r, err := l.Reader(tail)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		// A fresh buffer per chunk: a sent message must not change afterwards.
		buf := make([]byte, logChunkSize)
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&pb.LogChunk{Instance: id, Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
