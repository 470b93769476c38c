package cliclient

import (
	"context"
	"path/filepath"
	"strings"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// maxSizeBytes bounds a size flag that is not a memory limit (--scratch):
// 1Ti, the most a workload may ask for.
const maxSizeBytes = 1 << 40

// ParseSize parses a size such as "64Mi", "1Gi" or "1048576" into bytes,
// as ParseMemory does but up to 1Ti. An empty string means none (0).
func ParseSize(s string) (int64, error) {
	return parseBytes(s, maxSizeBytes, "1Ti")
}

// ParseVolumes parses --volume NAME:/PATH[,per-instance] flags into
// volume mounts; the server checks the rest (a DNS label, an absolute
// path clear of /config and /secrets).
func ParseVolumes(flags []string) ([]*wasmorchv1.VolumeMount, error) {
	const hint = "use --volume NAME:/PATH or NAME:/PATH,per-instance, e.g. --volume data:/data"
	var out []*wasmorchv1.VolumeMount
	for _, f := range flags {
		spec, opts, hasOpts := strings.Cut(f, ",")
		name, path, ok := strings.Cut(spec, ":")
		if !ok || name == "" || path == "" {
			return nil, Errorf(hint, "invalid --volume %q: want NAME:/PATH[,per-instance]", f)
		}
		if err := ValidateName(name); err != nil {
			return nil, Errorf(nameRules, "invalid --volume %q: the volume name %v", f, err)
		}
		if !strings.HasPrefix(path, "/") {
			return nil, Errorf(hint, "invalid --volume %q: the guest path %q is not absolute", f, path)
		}
		vm := &wasmorchv1.VolumeMount{Name: name, Path: path}
		if hasOpts {
			for _, o := range strings.Split(opts, ",") {
				if o != "per-instance" {
					return nil, Errorf(hint, "invalid --volume %q: unknown option %q (the one option is per-instance)", f, o)
				}
				vm.PerInstance = true
			}
		}
		out = append(out, vm)
	}
	return out, nil
}

// ListVolumes lists the named volumes.
func (c *Client) ListVolumes(ctx context.Context) ([]*wasmorchv1.VolumeView, error) {
	resp, err := objectCall(ctx, c, "volume", c.api.ListVolumes, &wasmorchv1.ListVolumesRequest{})
	return resp.GetVolumes(), err
}

// GetVolume reads one named volume.
func (c *Client) GetVolume(ctx context.Context, name string) (*wasmorchv1.VolumeView, error) {
	if err := CheckObjectName("volume", name); err != nil {
		return nil, err
	}
	return objectCall(ctx, c, "volume", c.api.GetVolume, &wasmorchv1.GetVolumeRequest{Name: name})
}

// DeleteVolume removes a named volume that no workload mounts.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	if err := CheckObjectName("volume", name); err != nil {
		return err
	}
	_, err := objectCall(ctx, c, "volume", c.api.DeleteVolume, &wasmorchv1.DeleteVolumeRequest{Name: name})
	return err
}

// ParseMounts parses --mount HOST:/PATH[:ro] flags into host mounts.
func ParseMounts(flags []string) ([]*wasmorchv1.HostMount, error) {
	const hint = "use --mount HOST-DIR:/PATH or HOST-DIR:/PATH:ro, e.g. --mount /srv/media:/media:ro"
	var out []*wasmorchv1.HostMount
	for _, f := range flags {
		parts := strings.Split(f, ":")
		ro := false
		switch {
		case len(parts) == 3 && parts[2] == "ro":
			ro = true
		case len(parts) == 3 && parts[2] == "rw":
		case len(parts) != 2:
			return nil, Errorf(hint, "invalid --mount %q: want HOST-DIR:/PATH[:ro]", f)
		}
		host, guest := parts[0], parts[1]
		if !filepath.IsAbs(host) || !strings.HasPrefix(guest, "/") {
			return nil, Errorf(hint, "invalid --mount %q: both paths must be absolute", f)
		}
		out = append(out, &wasmorchv1.HostMount{HostPath: filepath.Clean(host), Path: guest, ReadOnly: ro})
	}
	return out, nil
}
