//go:build !unix

package wasmrt

import (
	"fmt"

	"github.com/tetratelabs/wazero/experimental"
)

// memImage is not implemented here: modules keep their data segments.
type memImage struct{}

func newMemImage(*dataPlan) (*memImage, error) {
	return nil, fmt.Errorf("%w: no copy-on-write mappings on this system", errNoPlan)
}

func (*memImage) close() {}

func (*memImage) Allocate(uint64, uint64) experimental.LinearMemory { return nil }
