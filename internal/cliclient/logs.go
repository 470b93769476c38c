package cliclient

import (
	"bytes"
	"context"
	"errors"
	"io"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Logs writes a workload's instance output (stdout and stderr, as the
// workers kept it) to w. When the workload has several instances, each
// line is prefixed with "[<instance id>] " so that they can be told
// apart. tailBytes > 0 keeps only the last bytes of each instance.
func (c *Client) Logs(ctx context.Context, name string, tailBytes int64, w io.Writer) error {
	if tailBytes < 0 {
		return Errorf("pass --tail 0 (everything) or a positive number of bytes", "invalid --tail %d", tailBytes)
	}
	// Asking for the workload first turns a typo into "not found" rather
	// than an empty output.
	if _, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name}); err != nil {
		return err
	}
	// Two are enough to know whether lines need their instance's ID.
	insts, err := call(ctx, c, name, c.api.ListInstances, &wasmorchv1.ListInstancesRequest{Workload: name, Limit: 2})
	if err != nil {
		return err
	}
	stream, err := c.api.Logs(ctx, &wasmorchv1.LogsRequest{Workload: name, TailBytes: tailBytes})
	if err != nil {
		return c.failure(err, name)
	}
	out := newLogWriter(w, len(insts.GetInstances()) > 1)
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.flush()
		}
		if err != nil {
			_ = out.flush()
			return c.failure(err, name)
		}
		if err := out.write(chunk.GetInstance(), chunk.GetData()); err != nil {
			return err
		}
	}
}

// logWriter prefixes whole lines with their instance's id. Chunks may end
// mid-line, so each instance's unfinished line waits for the rest of it.
type logWriter struct {
	w       io.Writer
	prefix  bool
	partial map[string][]byte
	order   []string // instances with a partial line, in arrival order
}

func newLogWriter(w io.Writer, prefix bool) *logWriter {
	return &logWriter{w: w, prefix: prefix, partial: map[string][]byte{}}
}

func (l *logWriter) write(instance string, data []byte) error {
	if !l.prefix {
		_, err := l.w.Write(data)
		return err
	}
	var buf bytes.Buffer
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if _, ok := l.partial[instance]; !ok {
				l.order = append(l.order, instance)
			}
			l.partial[instance] = append(l.partial[instance], data...)
			break
		}
		buf.WriteString("[" + instance + "] ")
		buf.Write(l.partial[instance])
		buf.Write(data[:i+1])
		l.forget(instance)
		data = data[i+1:]
	}
	_, err := l.w.Write(buf.Bytes())
	return err
}

func (l *logWriter) forget(instance string) {
	if _, ok := l.partial[instance]; !ok {
		return
	}
	delete(l.partial, instance)
	for i, id := range l.order {
		if id == instance {
			l.order = append(l.order[:i], l.order[i+1:]...)
			break
		}
	}
}

// flush ends every unfinished line.
func (l *logWriter) flush() error {
	var buf bytes.Buffer
	for _, id := range l.order {
		buf.WriteString("[" + id + "] ")
		buf.Write(l.partial[id])
		buf.WriteByte('\n')
	}
	l.order, l.partial = nil, map[string][]byte{}
	_, err := l.w.Write(buf.Bytes())
	return err
}
