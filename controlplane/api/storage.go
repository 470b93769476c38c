package api

import (
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/manifest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// checkScratchIn refuses a spec whose scratch space (state, issue 14) is
// over what every registered node allows one instance (its worker's
// --max-scratch), so that it is not stored only to stay pending. With no
// node registered yet there is nothing to compare with: the scheduler
// says why it waits. It looks at the nodes only for a spec that asks for
// scratch space.
func checkScratchIn(r cache.Reader, spec *v1.WorkloadSpec) error {
	want := spec.GetScratchBytes()
	if want <= 0 {
		return nil
	}
	nodes := r.Nodes()
	if len(nodes) == 0 {
		return nil
	}
	var most int64
	for _, n := range nodes {
		most = max(most, n.Value.GetMaxScratchBytes())
	}
	if want <= most {
		return nil
	}
	if most == 0 {
		return errdefs.Invalidf("scratch space of %s is more than any node allows: no node offers scratch space (agent|up --max-scratch)", manifest.FormatBytes(want))
	}
	return errdefs.Invalidf("scratch space of %s is more than any node allows one instance (at most %s: agent|up --max-scratch)", manifest.FormatBytes(want), manifest.FormatBytes(most))
}
