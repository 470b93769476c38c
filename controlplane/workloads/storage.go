package workloads

import (
	"path"
	"slices"
	"strings"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/volumes"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// MaxScratchBytes bounds the scratch space a workload may ask for (state,
// issue 14); what a node allows is its worker's --max-scratch, which the
// API checks against the registered nodes.
const MaxScratchBytes = 1 << 40

// MaxVolumes bounds the named volumes one workload mounts.
const MaxVolumes = 16

// validateStorage checks a spec's scratch space and volumes on their own.
func validateStorage(spec *v1.WorkloadSpec) error {
	if err := validateVolumes(spec); err != nil {
		return err
	}
	s := spec.GetScratchBytes()
	switch {
	case s == 0:
		return nil
	case s < 0 || s > MaxScratchBytes:
		return errdefs.Invalidf("scratch space of %d bytes is outside 1 byte .. 1Ti", s)
	}
	return nil
}

// reservedGuestPaths are where an instance sees what the worker gives it
// besides volumes: configs, secrets, its scratch space.
var reservedGuestPaths = []string{"/config", "/secrets"}

// ValidateVolumeName checks a volume's name: a DNS label.
func ValidateVolumeName(name string) error {
	if len(name) > maxWorkloadNameLn || !dnsLabel.MatchString(name) {
		return errdefs.Invalidf("volume name %q is not a DNS label: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", name)
	}
	return nil
}

// ValidatePerInstanceNames checks that the volumes workload name mounts
// per instance have names for every replica slot it may have:
// NAME-WORKLOAD-ORDINAL (internal/volumes) is a DNS label up to the
// highest slot (MaxReplicas-1).
func ValidatePerInstanceNames(name string, spec *v1.WorkloadSpec) error {
	for _, v := range spec.GetVolumes() {
		if !v.GetPerInstance() {
			continue
		}
		longest := volumes.PerInstanceName(v.GetName(), name, MaxReplicas-1)
		if len(longest) > maxWorkloadNameLn {
			return errdefs.Invalidf("volume %s: the per-instance volumes of workload %s are named %s, up to %d characters (%s), more than 63: use a shorter volume or workload name",
				v.GetName(), name, volumes.PerInstanceName(v.GetName(), name, 0), len(longest), longest)
		}
	}
	return nil
}

// validateVolumes checks a spec's named volumes and host mounts: valid
// names, each volume once, host paths absolute and clean, mounted at
// distinct absolute paths that do not overlap /config, /secrets, the
// scratch space's /tmp or one another.
func validateVolumes(spec *v1.WorkloadSpec) error {
	vols := spec.GetVolumes()
	if len(vols)+len(spec.GetMounts()) == 0 {
		return nil
	}
	if len(vols)+len(spec.GetMounts()) > MaxVolumes {
		return errdefs.Invalidf("a workload mounts at most %d volumes and host directories, not %d", MaxVolumes, len(vols)+len(spec.GetMounts()))
	}
	if spec.GetHttp() != nil && (spec.GetPort() == 0 || spec.GetKind() == KindContainer) {
		return errdefs.Invalidf("volumes and host mounts are for long-running instances: a function's sandbox lives for one request; drop --volume/--mount or the route, or make it a Wasm service (--port)")
	}
	taken := slices.Clone(reservedGuestPaths)
	if spec.GetScratchBytes() > 0 {
		taken = append(taken, "/tmp")
	}
	names := map[string]bool{}
	for _, v := range vols {
		if err := ValidateVolumeName(v.GetName()); err != nil {
			return err
		}
		if names[v.GetName()] {
			return errdefs.Invalidf("volume %q is mounted twice: mount it once", v.GetName())
		}
		names[v.GetName()] = true
		p := v.GetPath()
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return errdefs.Invalidf("volume %s: guest path %q is not a clean absolute path below / (e.g. /data)", v.GetName(), p)
		}
		for _, t := range taken {
			if overlaps(p, t) {
				return errdefs.Invalidf("volume %s: guest path %s overlaps %s; mount it elsewhere, e.g. /data", v.GetName(), p, t)
			}
		}
		taken = append(taken, p)
	}
	for _, m := range spec.GetMounts() {
		h, p := m.GetHostPath(), m.GetPath()
		if !path.IsAbs(h) || path.Clean(h) != h {
			return errdefs.Invalidf("host mount %s: host path %q is not a clean absolute path", h, h)
		}
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return errdefs.Invalidf("host mount %s: guest path %q is not a clean absolute path below / (e.g. /media)", h, p)
		}
		for _, t := range taken {
			if overlaps(p, t) {
				return errdefs.Invalidf("host mount %s: guest path %s overlaps %s; mount it elsewhere", h, p, t)
			}
		}
		taken = append(taken, p)
	}
	return nil
}

// MountAllowed reports whether host directory dir is one of allowed or
// below one of them (all clean absolute paths).
func MountAllowed(dir string, allowed []string) bool {
	for _, a := range allowed {
		if a == "/" || dir == a || strings.HasPrefix(dir, a+"/") {
			return true
		}
	}
	return false
}

// overlaps reports whether one of two clean absolute paths is the other or
// below it.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}
