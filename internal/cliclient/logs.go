package cliclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// LogsOptions choose what Logs prints.
type LogsOptions struct {
	// TailLines keeps each instance's last lines (-1: all kept; 0: none,
	// so that a follow prints only what comes next); TailBytes its last
	// bytes (0: all).
	TailLines, TailBytes int64
	// Since keeps the lines written at or after it (zero: all).
	Since time.Time
	// Instance prints one instance's output only.
	Instance string
	// Timestamps starts each line with the time it was written.
	Timestamps bool
	// Follow goes on printing what the instances write, new ones
	// included, until ctx ends or the workload is deleted.
	Follow bool
}

// Logs writes a workload's instance output (stdout and stderr, as the
// workers kept it) to w. When lines come from several instances, each
// starts with "[<instance id>] " so that they can be told apart. Lines
// the server adds while following (a node lost, output skipped, the
// workload deleted) go to notices. A follow ended by ctx returns nil.
func (c *Client) Logs(ctx context.Context, name string, o LogsOptions, w, notices io.Writer) error {
	if o.TailBytes < 0 {
		return Errorf("pass --tail-bytes 0 (everything) or a positive number of bytes", "invalid --tail-bytes %d", o.TailBytes)
	}
	if o.TailLines < -1 {
		return Errorf("pass --tail N lines (0: none of the kept output; -1: all of it)", "invalid --tail %d", o.TailLines)
	}
	// Asking for the workload first turns a typo into "not found" rather
	// than an empty output.
	if _, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name}); err != nil {
		return err
	}
	prefix := false
	if o.Instance == "" {
		// Two are enough to know whether lines need their instance's ID.
		insts, err := call(ctx, c, name, c.api.ListInstances, &wasmorchv1.ListInstancesRequest{Workload: name, Limit: 2})
		if err != nil {
			return err
		}
		prefix = len(insts.GetInstances()) > 1
	}
	req := &wasmorchv1.LogsRequest{Workload: name, TailBytes: o.TailBytes, Instance: o.Instance, Timestamps: o.Timestamps, Follow: o.Follow}
	switch o.TailLines { // the API's 0 is all, and -1 none
	case -1:
	case 0:
		req.TailLines = -1
	default:
		req.TailLines = o.TailLines
	}
	if !o.Since.IsZero() {
		req.SinceUnixNano = o.Since.UnixNano()
	}
	stream, err := c.api.Logs(ctx, req)
	if err != nil {
		return c.failure(err, name)
	}
	out := newLogWriter(w, prefix)
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.flush()
		}
		if err != nil {
			_ = out.flush()
			if o.Follow && ctx.Err() != nil {
				return nil // Ctrl-C ends a follow
			}
			if o.Instance != "" && errdefs.IsNotFound(errdefs.FromGRPC(err)) {
				return Errorf("see 'wasmorch get instances --workload "+name+"'", "instance %q of workload %q not found", o.Instance, name)
			}
			return c.failure(err, name)
		}
		if n := chunk.GetNotice(); n != "" {
			if chunk.GetWorkloadDeleted() {
				_ = out.flush()
			}
			who := ""
			if id := chunk.GetInstance(); id != "" {
				who = " [" + id + "]"
			}
			if _, err := fmt.Fprintf(notices, "wasmorch logs%s: %s\n", who, OneLine(n)); err != nil {
				return err
			}
			continue
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
	// Without prefixes: the instance written so far, and whether the
	// last byte written ended a line. A second instance turns prefixes
	// on (a follow that sees a new instance).
	first  string
	midRaw bool
}

func newLogWriter(w io.Writer, prefix bool) *logWriter {
	return &logWriter{w: w, prefix: prefix, partial: map[string][]byte{}}
}

func (l *logWriter) write(instance string, data []byte) error {
	if !l.prefix && l.first != "" && instance != l.first {
		l.prefix = true
		if l.midRaw {
			if _, err := io.WriteString(l.w, "\n"); err != nil {
				return err
			}
		}
	}
	if !l.prefix {
		l.first = instance
		if len(data) > 0 {
			l.midRaw = data[len(data)-1] != '\n'
		}
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
