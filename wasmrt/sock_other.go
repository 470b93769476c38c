//go:build !linux

package wasmrt

import (
	"errors"
	"os"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// sockets is a Wasm service's socket table; services need Linux.
type sockets struct{}

func newSockets(*instance, []*os.File, int32) (*sockets, error) {
	return nil, errors.New("Wasm services on sockets need a Linux node")
}

func (*sockets) close()                               {}
func (*sockets) pollOneoff(api.Module, []uint64) bool { return false }

func exportSocketFunctions(wazero.HostModuleBuilder, map[string]wasiFunc) error {
	return nil
}
