package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Streams reach the browser as server-sent events (EventSource). A page
// follows all its kinds over one stream, since a browser opens at most
// six connections to one server over HTTP/1.1 and every stream holds
// one: /ui/api/watch?w=KIND:REVISION[:WORKLOAD]&w=... makes one Watch call
// per w and relays their events, each as a message {"i": N, "ev": event}
// where N is the w's index. A watch that ends ends alone, with a message
// {"i": N, "failure": {"code", "error"}}, after which the page decides:
// OutOfRange (its revision was compacted) means list that kind again,
// anything else means watch again from its last BOOKMARK. A workload's
// logs are a stream of their own (their lines cannot be resumed).

// keepalive is how often an idle stream sends a comment, so that proxies
// and the browser do not take a quiet watch for a dead one.
const keepalive = 20 * time.Second

// maxWatches bounds the watches of one stream.
const maxWatches = 8

var watchKinds = map[string]v1.WatchKind{
	"workloads": v1.WatchKind_WATCH_KIND_WORKLOADS,
	"instances": v1.WatchKind_WATCH_KIND_INSTANCES,
	"nodes":     v1.WatchKind_WATCH_KIND_NODES,
	"events":    v1.WatchKind_WATCH_KIND_EVENTS,
}

// parseWatch reads one w: KIND:REVISION[:WORKLOAD].
func parseWatch(w string) (*v1.WatchRequest, error) {
	parts := strings.SplitN(w, ":", 3)
	kind, ok := watchKinds[parts[0]]
	if !ok || len(parts) < 2 {
		return nil, status.Errorf(codes.InvalidArgument, "watch %q is not KIND:REVISION[:WORKLOAD] with a kind of workloads, instances, nodes or events", w)
	}
	rev, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "watch %q: revision %q is not a number", w, parts[1])
	}
	req := &v1.WatchRequest{Kind: kind, Revision: rev}
	if len(parts) == 3 {
		req.Workload = parts[2]
	}
	return req, nil
}

// watchMsg is one event, or the end, of watch i.
type watchMsg struct {
	i   int
	ev  *v1.WatchEvent
	err error
}

// watch relays the watches of ?w=... over one event stream.
func (d *Dashboard) watch(w http.ResponseWriter, r *http.Request) {
	specs := r.URL.Query()["w"]
	if len(specs) == 0 || len(specs) > maxWatches {
		writeError(w, status.Errorf(codes.InvalidArgument, "a stream follows 1 to %d watches (w=KIND:REVISION[:WORKLOAD]), not %d", maxWatches, len(specs)))
		return
	}
	reqs := make([]*v1.WatchRequest, len(specs))
	for i, spec := range specs {
		req, err := parseWatch(spec)
		if err != nil {
			writeError(w, err)
			return
		}
		reqs[i] = req
	}
	ctx := r.Context()
	streams := make([]v1.Control_WatchClient, len(reqs))
	firsts := make([]watchMsg, len(reqs))
	for i, req := range reqs {
		stream, err := d.cfg.Control.Watch(outgoing(ctx), req)
		if err == nil {
			var ev *v1.WatchEvent
			ev, err = stream.Recv() // the BOOKMARK a watch starts with, or its refusal
			firsts[i] = watchMsg{i: i, ev: ev, err: err}
		} else {
			firsts[i] = watchMsg{i: i, err: err}
		}
		// A refused token is the login page; any other refusal (a
		// revision compacted away) is that watch's failure, which the
		// page reads, where an EventSource could not read an error status.
		if status.Code(firsts[i].err) == codes.Unauthenticated {
			d.answer(w, nil, firsts[i].err)
			return
		}
		streams[i] = stream
	}
	sse, ok := newEventStream(w)
	if !ok {
		return
	}
	msgs := make(chan watchMsg)
	running := 0
	for i, first := range firsts {
		if !sse.watchMsg(first) {
			return
		}
		if first.err != nil {
			continue
		}
		running++
		go func(i int, stream v1.Control_WatchClient) {
			for {
				ev, err := stream.Recv()
				select {
				case msgs <- watchMsg{i: i, ev: ev, err: err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}(i, streams[i])
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for running > 0 {
		select {
		case m := <-msgs:
			if m.err != nil {
				running--
			}
			if !sse.watchMsg(m) {
				return
			}
		case <-tick.C:
			if !sse.comment() {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// logLine is one chunk of a workload's output as the page reads it.
type logLine struct {
	Instance string `json:"instance,omitempty"`
	Text     string `json:"text,omitempty"`
	Notice   string `json:"notice,omitempty"`
	Deleted  bool   `json:"deleted,omitempty"`
}

// logs follows a workload's output: the last ?tail lines (default 100) of
// each instance, then what they write, new instances included.
func (d *Dashboard) logs(w http.ResponseWriter, r *http.Request) {
	tail := int64(100)
	if s := r.URL.Query().Get("tail"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 10000 {
			writeError(w, status.Errorf(codes.InvalidArgument, "tail %q is not a number from 0 to 10000", s))
			return
		}
		tail = n
	}
	if tail == 0 {
		tail = -1 // none: only what comes next
	}
	stream, err := d.cfg.Control.Logs(outgoing(r.Context()), &v1.LogsRequest{Workload: r.PathValue("name"), TailLines: tail, Follow: true})
	if err != nil {
		d.answer(w, nil, err)
		return
	}
	sse, ok := newEventStream(w)
	if !ok {
		return
	}
	for {
		c, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && r.Context().Err() == nil {
				sse.failure(err)
			}
			return
		}
		if !sse.json(logLine{Instance: c.GetInstance(), Text: string(c.GetData()), Notice: c.GetNotice(), Deleted: c.GetWorkloadDeleted()}) {
			return
		}
	}
}

// eventStream writes server-sent events, flushing each.
type eventStream struct {
	w http.ResponseWriter
	f http.Flusher
}

func newEventStream(w http.ResponseWriter) (*eventStream, bool) {
	f, ok := w.(http.Flusher)
	if !ok {
		writeError(w, status.Error(codes.Internal, "this listener cannot stream"))
		return nil, false
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &eventStream{w: w, f: f}, true
}

func (s *eventStream) send(event string, data []byte) bool {
	var b strings.Builder
	if event != "" {
		b.WriteString("event: " + event + "\n")
	}
	// A data field cannot hold a newline: each line is a field of its own.
	for _, line := range strings.Split(string(data), "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	if _, err := io.WriteString(s.w, b.String()); err != nil {
		return false
	}
	s.f.Flush()
	return true
}

// watchMsg sends one event of watch m.i, or its end.
func (s *eventStream) watchMsg(m watchMsg) bool {
	if m.err != nil {
		st := status.Convert(m.err)
		b, _ := json.Marshal(map[string]any{"i": m.i, "failure": map[string]string{"code": st.Code().String(), "error": st.Message()}})
		return s.send("", b)
	}
	b, err := marshal.Marshal(m.ev)
	if err != nil {
		return s.watchMsg(watchMsg{i: m.i, err: err})
	}
	return s.send("", fmt.Appendf(nil, `{"i":%d,"ev":%s}`, m.i, b))
}

func (s *eventStream) json(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return s.failure(err)
	}
	return s.send("", b)
}

// failure ends the stream with the error's code and message.
func (s *eventStream) failure(err error) bool {
	st := status.Convert(err)
	b, _ := json.Marshal(map[string]string{"code": st.Code().String(), "error": st.Message()})
	s.send("failure", b)
	return false
}

func (s *eventStream) comment() bool {
	if _, err := fmt.Fprint(s.w, ": keepalive\n\n"); err != nil {
		return false
	}
	s.f.Flush()
	return true
}
