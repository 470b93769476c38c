package ctrrt

import (
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// State (issue 14): an instance's volumes, host mounts and scratch space
// (InstanceSpec.Mounts) in a container. A volume or host mount is a bind
// mount of the host directory the worker gives, read-only when asked:
// the very directory a Wasm instance of the same volume sees, so that a
// workload that falls back to its container image keeps its data. A
// bounded mount (LimitBytes, the scratch space) cannot be a bind mount:
// nothing bounds what a container writes to a host directory. It is a
// tmpfs of that size instead (Docker's `--tmpfs /tmp:size=N`): the
// kernel refuses a write past it with ENOSPC. Its pages are memory, which
// the kernel charges to the container's memory cgroup, and it lasts as
// long as the container: a restarted container finds it empty. It holds
// as many names (inodes) as a Wasm instance's may (wasmrt: one per 16 KiB
// of its size, at least 1,024), so that a flood of empty files stops too.

// bytesPerName and minNames bound the inodes of a scratch tmpfs, as
// wasmrt bounds the names in a Wasm instance's scratch space.
const (
	bytesPerName = 16 << 10
	minNames     = 1024
)

// mountsOf returns the OCI mounts of an instance's mounts.
func mountsOf(ms []runtimeapi.Mount) ([]specs.Mount, error) {
	out := make([]specs.Mount, 0, len(ms))
	for _, m := range ms {
		if !path.IsAbs(m.GuestPath) || path.Clean(m.GuestPath) != m.GuestPath || m.GuestPath == "/" {
			return nil, fmt.Errorf("mount path %q is not a clean absolute path below /", m.GuestPath)
		}
		if m.LimitBytes > 0 {
			out = append(out, specs.Mount{
				Destination: m.GuestPath,
				Type:        "tmpfs",
				Source:      "tmpfs",
				Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(m.LimitBytes, 10),
					"nr_inodes=" + strconv.FormatInt(max(m.LimitBytes/bytesPerName, minNames)+1, 10)}, // +1: its root
			})
			continue
		}
		if !filepath.IsAbs(m.HostPath) || strings.IndexByte(m.HostPath, 0) >= 0 {
			return nil, fmt.Errorf("mount %s: host directory %q is not an absolute path", m.GuestPath, m.HostPath)
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{
			Destination: m.GuestPath,
			Type:        "bind",
			Source:      m.HostPath,
			Options:     []string{"rbind", mode, "nosuid", "nodev"},
		})
	}
	return out, nil
}
