package ui

import (
	"encoding/json"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The JSON side of the dashboard: each handler makes one Control call
// with the browser's token and answers its result as protojson (the
// message's own field names, camelCase), or the call's error as
// {"error": "..."} with the HTTP status of its gRPC code.

// pageLimit bounds one page of a list the browser asks for; the API
// refuses more than its own MaxPageSize.
const pageLimit = 500

var marshal = protojson.MarshalOptions{}

// list answers one page of workloads, instances, nodes or events, with
// the revision a watch continues from.
func (d *Dashboard) list(w http.ResponseWriter, r *http.Request) {
	ctx := outgoing(r.Context())
	q := r.URL.Query()
	limit := pageLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > pageLimit {
			writeError(w, status.Errorf(codes.InvalidArgument, "limit %q is not a number from 1 to %d", s, pageLimit))
			return
		}
		limit = n
	}
	cont := q.Get("continue")
	var (
		resp proto.Message
		err  error
	)
	switch kind := r.PathValue("kind"); kind {
	case "workloads":
		resp, err = d.cfg.Control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{Limit: int32(limit), Continue: cont})
	case "instances":
		resp, err = d.cfg.Control.ListInstances(ctx, &v1.ListInstancesRequest{Limit: int32(limit), Continue: cont, Workload: q.Get("workload")})
	case "nodes":
		resp, err = d.cfg.Control.ListNodes(ctx, &v1.ListNodesRequest{Limit: int32(limit), Continue: cont})
	case "events":
		resp, err = d.cfg.Control.ListEvents(ctx, &v1.ListEventsRequest{Limit: int32(limit), Continue: cont, Object: q.Get("object")})
	default:
		writeError(w, status.Errorf(codes.NotFound, "no list of %q: workloads, instances, nodes or events", kind))
		return
	}
	d.answer(w, resp, err)
}

// workload answers one workload as the CLI's describe reads it: its
// counts and, for a function, the requests answered across every
// gateway, whose rate the page shows.
func (d *Dashboard) workload(w http.ResponseWriter, r *http.Request) {
	resp, err := d.cfg.Control.GetWorkload(outgoing(r.Context()), &v1.GetWorkloadRequest{Name: r.PathValue("name")})
	d.answer(w, resp, err)
}

// scale sets a workload's replicas: {"replicas": N}.
func (d *Dashboard) scale(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Replicas *int32 `json:"replicas"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&body); err != nil || body.Replicas == nil {
		writeError(w, status.Error(codes.InvalidArgument, `scale takes {"replicas": N}`))
		return
	}
	resp, err := d.cfg.Control.ScaleWorkload(outgoing(r.Context()), &v1.ScaleRequest{Name: r.PathValue("name"), Replicas: *body.Replicas})
	d.answer(w, resp, err)
}

// rollout is `wasmorch rollout undo|promote|restart NAME`.
func (d *Dashboard) rollout(w http.ResponseWriter, r *http.Request) {
	ctx, name := outgoing(r.Context()), r.PathValue("name")
	var (
		resp proto.Message
		err  error
	)
	switch action := r.PathValue("action"); action {
	case "undo":
		resp, err = d.cfg.Control.RollbackWorkload(ctx, &v1.RollbackRequest{Workload: name})
	case "promote":
		resp, err = d.cfg.Control.PromoteRollout(ctx, &v1.PromoteRolloutRequest{Workload: name})
	case "restart":
		resp, err = d.cfg.Control.RestartRollout(ctx, &v1.RestartRolloutRequest{Workload: name})
	default:
		writeError(w, status.Errorf(codes.NotFound, "no rollout action %q: undo, promote or restart", action))
		return
	}
	d.answer(w, resp, err)
}

// delete deletes a workload.
func (d *Dashboard) delete(w http.ResponseWriter, r *http.Request) {
	resp, err := d.cfg.Control.DeleteWorkload(outgoing(r.Context()), &v1.DeleteWorkloadRequest{Name: r.PathValue("name")})
	d.answer(w, resp, err)
}

// answer writes a call's result, or its error; a refused credential (the
// token revoked or expired meanwhile) is the login page.
func (d *Dashboard) answer(w http.ResponseWriter, resp proto.Message, err error) {
	if status.Code(err) == codes.Unauthenticated {
		clearCookie(w)
		d.loginPage(w, status.Convert(err).Message())
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	b, err := marshal.Marshal(resp)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// writeError answers err as {"error": message} with the HTTP status of
// its gRPC code.
func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus(st.Code()))
	_ = json.NewEncoder(w).Encode(map[string]string{"error": st.Message(), "code": st.Code().String()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// httpStatus is the HTTP status of a gRPC code.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded, codes.Canceled:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
