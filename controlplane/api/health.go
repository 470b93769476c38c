package api

import (
	"context"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthProbeTimeout bounds the etcd read behind one health check.
const healthProbeTimeout = 2 * time.Second

// healthServer is the standard gRPC health service (observe) for any
// client, certificate or not: NOT_SERVING while the member stops, and a
// Check is also NOT_SERVING while this member cannot read etcd (no
// quorum), as /readyz answers 503 then. Watch follows only the former.
type healthServer struct {
	*health.Server
	s *Server
}

// Check answers the standard server's status; when that is SERVING, only
// while this member's etcd has a leader and answers a linearizable read.
func (h healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	resp, err := h.Server.Check(ctx, req)
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return resp, err
	}
	if h.s.etcd != nil && h.s.etcd.Server.Leader() == 0 {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
	defer cancel()
	if _, err := h.s.store.Client.Get(ctx, "health-probe"); err != nil {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	return resp, nil
}
