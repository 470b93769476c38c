package workloads

import (
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestValidateScratch(t *testing.T) {
	const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	tests := []struct {
		spec *v1.WorkloadSpec
		want string // "" = valid
	}{
		{&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: 64 << 20}, ""},
		{&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: -1}, "scratch space of -1 bytes is outside 1 byte .. 1Ti"},
		{&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: 2 << 40}, "outside 1 byte .. 1Ti"},
		{&v1.WorkloadSpec{Kind: KindContainer, Image: "team/app:1", ScratchBytes: 1 << 20}, ""},
		{&v1.WorkloadSpec{ModuleDigest: digest, Http: &v1.HttpTrigger{Route: "/f"}, ScratchBytes: 1 << 20}, ""},
	}
	for _, tc := range tests {
		err := Validate(tc.spec)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.spec, err, tc.want)
		}
	}
}

func TestValidateVolumes(t *testing.T) {
	const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	vols := func(spec *v1.WorkloadSpec, mounts ...string) *v1.WorkloadSpec {
		for _, m := range mounts {
			name, path, _ := strings.Cut(m, ":")
			spec.Volumes = append(spec.Volumes, &v1.VolumeMount{Name: name, Path: path})
		}
		return spec
	}
	wasm := func() *v1.WorkloadSpec { return &v1.WorkloadSpec{ModuleDigest: digest} }
	tests := []struct {
		spec *v1.WorkloadSpec
		want string // "" = valid
	}{
		{vols(wasm(), "data:/data", "logs:/var/log"), ""},
		{vols(&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: 1 << 20}, "data:/data"), ""},
		{vols(wasm(), "Data:/data"), `volume name "Data" is not a DNS label`},
		{vols(wasm(), "data:data"), `volume data: guest path "data" is not a clean absolute path`},
		{vols(wasm(), "data:/data/../x"), "is not a clean absolute path"},
		{vols(wasm(), "data:/"), "is not a clean absolute path"},
		{vols(wasm(), "data:/config"), "volume data: guest path /config overlaps /config"},
		{vols(wasm(), "data:/secrets/db"), "guest path /secrets/db overlaps /secrets"},
		{vols(&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: 1 << 20}, "data:/tmp/x"), "overlaps /tmp"},
		{vols(wasm(), "data:/data", "logs:/data/logs"), "volume logs: guest path /data/logs overlaps /data"},
		{vols(wasm(), "data:/a", "data:/b"), `volume "data" is mounted twice`},
		{vols(&v1.WorkloadSpec{Kind: KindContainer, Image: "team/app:1"}, "data:/data"), ""},
		{vols(&v1.WorkloadSpec{ModuleDigest: digest, FallbackImage: "team/app:1"}, "data:/data"), ""},
		{vols(&v1.WorkloadSpec{ModuleDigest: digest, Http: &v1.HttpTrigger{Route: "/f"}}, "data:/data"), "volumes and host mounts are for long-running instances"},
		{vols(&v1.WorkloadSpec{ModuleDigest: digest, Port: 8080, Http: &v1.HttpTrigger{Route: "/s"}}, "data:/data"), ""},
		{vols(&v1.WorkloadSpec{Kind: KindContainer, Image: "team/app:1", Port: 8080, Http: &v1.HttpTrigger{Route: "/s"}}, "data:/data"), "volumes and host mounts are for long-running instances"},
	}
	for _, tc := range tests {
		err := Validate(tc.spec)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.spec, err, tc.want)
		}
	}
}

func TestValidateHostMounts(t *testing.T) {
	const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	mount := func(host, guest string) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{ModuleDigest: digest, Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data"}},
			Mounts: []*v1.HostMount{{HostPath: host, Path: guest}}}
	}
	tests := []struct {
		spec *v1.WorkloadSpec
		want string
	}{
		{mount("/srv/media", "/media"), ""},
		{mount("srv/media", "/media"), `host mount srv/media: host path "srv/media" is not a clean absolute path`},
		{mount("/srv/../etc", "/media"), "is not a clean absolute path"},
		{mount("/srv/media", "media"), `guest path "media" is not a clean absolute path`},
		{mount("/srv/media", "/data/media"), "host mount /srv/media: guest path /data/media overlaps /data"},
		{mount("/srv/media", "/config"), "overlaps /config"},
	}
	for _, tc := range tests {
		err := Validate(tc.spec)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.spec, err, tc.want)
		}
	}
	for _, tc := range []struct {
		dir     string
		allowed []string
		want    bool
	}{
		{"/srv/media", []string{"/srv"}, true},
		{"/srv", []string{"/srv"}, true},
		{"/srvx", []string{"/srv"}, false},
		{"/etc", []string{"/srv", "/tmp"}, false},
		{"/etc", []string{"/"}, true},
		{"/etc", nil, false},
	} {
		if got := MountAllowed(tc.dir, tc.allowed); got != tc.want {
			t.Errorf("MountAllowed(%s, %v) = %v", tc.dir, tc.allowed, got)
		}
	}
}

// A per-instance volume's records are NAME-WORKLOAD-ORDINAL: that must be
// a volume name (63 characters) for every replica slot a workload may have.
func TestValidatePerInstanceNames(t *testing.T) {
	spec := &v1.WorkloadSpec{Replicas: 2, Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data", PerInstance: true}}}
	if err := ValidatePerInstanceNames("counter", spec); err != nil {
		t.Errorf("data per instance of counter: %v", err)
	}
	long := strings.Repeat("w", 53)
	err := ValidatePerInstanceNames(long, spec)
	if err == nil || !strings.Contains(err.Error(), "volume data: the per-instance volumes of workload "+long+" are named data-"+long+"-0, up to 64 characters") {
		t.Errorf("a name too long for slot 99999: %v", err)
	}
	spec.Volumes[0].PerInstance = false
	if err := ValidatePerInstanceNames(long, spec); err != nil {
		t.Errorf("a shared volume is named as it is: %v", err)
	}
}
