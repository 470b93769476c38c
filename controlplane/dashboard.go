package controlplane

import (
	"fmt"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/ui"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The web dashboard (controlplane/ui) is served on the member's own
// listener, Config.MetricsAddr (loopback by default), beside /metrics:
// not on the gateway's public port, which belongs to the functions. It
// calls this member's API over a connection of its own, with no client
// certificate: each call carries the browser's dashboard token, so the
// API authorizes it as the admin who minted the token.

// newDashboard dials the member's own API and builds the dashboard.
func (s *Server) newDashboard() (http.Handler, error) {
	conn, err := grpc.NewClient("passthrough:///"+s.clientAddr(),
		grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(s.sec.ca.Pool(), nil))))
	if err != nil {
		return nil, fmt.Errorf("dashboard: dial this member's API: %w", err)
	}
	s.selfConn = conn
	return ui.New(ui.Config{Control: v1.NewControlClient(conn), Verify: s.api.VerifyUIToken, Member: s.cfg.Name, Logger: s.log})
}
