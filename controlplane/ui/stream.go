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

// Streams reach the browser as server-sent events (EventSource): each
// WatchEvent or log chunk is one "data:" message, and the end of a stream
// on an error is a "failure" event with the gRPC code and message, after
// which the page decides: OutOfRange (its revision was compacted) means
// list again, anything else means watch again from the last BOOKMARK.

// keepalive is how often an idle stream sends a comment, so that proxies
// and the browser do not take a quiet watch for a dead one.
const keepalive = 20 * time.Second

var watchKinds = map[string]v1.WatchKind{
	"workloads": v1.WatchKind_WATCH_KIND_WORKLOADS,
	"instances": v1.WatchKind_WATCH_KIND_INSTANCES,
	"nodes":     v1.WatchKind_WATCH_KIND_NODES,
	"events":    v1.WatchKind_WATCH_KIND_EVENTS,
}

// watch relays a Watch of one kind from ?revision=N (0: from now).
func (d *Dashboard) watch(w http.ResponseWriter, r *http.Request) {
	kind, ok := watchKinds[r.PathValue("kind")]
	if !ok {
		writeError(w, status.Errorf(codes.NotFound, "no watch of %q: workloads, instances, nodes or events", r.PathValue("kind")))
		return
	}
	q := r.URL.Query()
	var rev int64
	if s := q.Get("revision"); s != "" {
		var err error
		if rev, err = strconv.ParseInt(s, 10, 64); err != nil {
			writeError(w, status.Errorf(codes.InvalidArgument, "revision %q is not a number", s))
			return
		}
	}
	stream, err := d.cfg.Control.Watch(outgoing(r.Context()), &v1.WatchRequest{Kind: kind, Revision: rev, Workload: q.Get("workload")})
	if err != nil {
		d.answer(w, nil, err)
		return
	}
	// The first message says whether the watch was accepted. A refused
	// token is the login page; any other refusal (a revision compacted
	// away) is a failure event, which an EventSource can read, unlike an
	// error status.
	first, err := stream.Recv()
	if status.Code(err) == codes.Unauthenticated {
		d.answer(w, nil, err)
		return
	}
	sse, ok := newEventStream(w)
	if !ok {
		return
	}
	if err != nil {
		sse.failure(err)
		return
	}
	msgs := make(chan *v1.WatchEvent)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- ev:
			case <-r.Context().Done():
				return
			}
		}
	}()
	if !sse.proto(first) {
		return
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		select {
		case ev := <-msgs:
			if !sse.proto(ev) {
				return
			}
		case err := <-errc:
			sse.failure(err)
			return
		case <-tick.C:
			if !sse.comment() {
				return
			}
		case <-r.Context().Done():
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

func (s *eventStream) proto(ev *v1.WatchEvent) bool {
	b, err := marshal.Marshal(ev)
	if err != nil {
		return s.failure(err)
	}
	return s.send("", b)
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
