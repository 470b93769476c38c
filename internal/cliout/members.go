package cliout

import (
	"fmt"
	"io"
	"strings"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Member is a control-plane member as `wasmorch members` prints it.
type Member struct {
	Name             string   `json:"name"`
	ID               string   `json:"id"`
	State            string   `json:"state"`            // Healthy or Unhealthy
	Leader           bool     `json:"leader"`           // the etcd raft leader
	ControllerLeader bool     `json:"controllerLeader"` // runs the scheduler and controllers
	Learner          bool     `json:"learner,omitempty"`
	APIAddress       string   `json:"apiAddress,omitempty"`
	HTTPAddress      string   `json:"httpAddress,omitempty"`
	PeerURLs         []string `json:"peerURLs"`
	Error            string   `json:"error,omitempty"`
}

// Members converts the API's members.
func Members(vs []*wasmorchv1.Member) []Member {
	out := make([]Member, 0, len(vs))
	for _, v := range vs {
		m := Member{
			Name:             v.GetName(),
			ID:               fmt.Sprintf("%x", v.GetId()),
			State:            "Unhealthy",
			Leader:           v.GetEtcdLeader(),
			ControllerLeader: v.GetControllerLeader(),
			Learner:          v.GetLearner(),
			APIAddress:       v.GetApiAddress(),
			HTTPAddress:      v.GetHttpAddress(),
			PeerURLs:         v.GetPeerUrls(),
			Error:            v.GetError(),
		}
		if v.GetHealthy() {
			m.State = "Healthy"
		}
		out = append(out, m)
	}
	return out
}

// Members prints control-plane members.
func (p Printer) Members(w io.Writer, ms []Member) error {
	if p.Format != Table {
		return p.encode(w, ms)
	}
	rows := [][]string{{"NAME", "ID", "STATE", "ROLE", "API", "PEER", "ERROR"}}
	for _, m := range ms {
		var roles []string
		if m.Leader {
			roles = append(roles, "leader")
		}
		if m.ControllerLeader {
			roles = append(roles, "controllers")
		}
		if m.Learner {
			roles = append(roles, "learner")
		}
		rows = append(rows, []string{dash(m.Name), m.ID, m.State, dash(strings.Join(roles, ",")), dash(m.APIAddress), dash(strings.Join(m.PeerURLs, ",")), dash(m.Error)})
	}
	return writeTable(w, rows)
}
