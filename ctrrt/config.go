package ctrrt

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Runtime. cmd/ fills it; nothing here reads flags.
type Config struct {
	// Socket is containerd's gRPC socket.
	Socket string `json:"socket" yaml:"socket"`
	// Namespace is the containerd namespace wasmorch's images and
	// containers live in, apart from everything else on the host.
	Namespace string `json:"namespace" yaml:"namespace"`
	// Snapshotter unpacks images and holds container root filesystems.
	Snapshotter string `json:"snapshotter" yaml:"snapshotter"`
	// Shim is the containerd runtime (shim) that runs containers.
	Shim string `json:"shim" yaml:"shim"`
	// FIFODir holds the pipes that carry containers' stdout and stderr.
	FIFODir string `json:"fifoDir" yaml:"fifoDir"`
	// FilesDir holds the configs and secrets mounted into containers as
	// files, a directory per instance (see files.go). The worker puts it in
	// its data directory.
	FilesDir string `json:"filesDir" yaml:"filesDir"`
	// DefaultMemoryBytes is the memory limit of a container whose spec asks
	// for none: the same default as a Wasm instance's.
	DefaultMemoryBytes int64 `json:"defaultMemoryBytes" yaml:"defaultMemoryBytes"`
	// DialTimeout bounds connecting to containerd in New.
	DialTimeout time.Duration `json:"dialTimeout" yaml:"dialTimeout"`
	// CgroupRoot is where the cgroup hierarchies are mounted; the runtime
	// reads a container's OOM-kill count there.
	CgroupRoot string `json:"cgroupRoot" yaml:"cgroupRoot"`
	// Logger receives image and container events at Debug level.
	Logger *slog.Logger `json:"-" yaml:"-"`
}

// minMemoryBytes is the smallest memory limit runc accepts with room to
// start a process.
const minMemoryBytes = 6 << 20

// DefaultSocket is where a system containerd listens.
const DefaultSocket = "/run/containerd/containerd.sock"

// DefaultConfig returns the configuration a worker starts from.
func DefaultConfig() Config {
	return Config{
		Socket:      DefaultSocket,
		Namespace:   "wasmorch",
		Snapshotter: "overlayfs",
		Shim:        "io.containerd.runc.v2",
		FIFODir:     "/run/wasmorch/fifo",
		FilesDir:    "/run/wasmorch/files",
		DialTimeout: 2 * time.Second,
		CgroupRoot:  "/sys/fs/cgroup",

		DefaultMemoryBytes: 128 << 20,
	}
}

func (c Config) withDefaults() Config {
	def := DefaultConfig()
	for _, f := range []struct {
		v *string
		d string
	}{
		{&c.Socket, def.Socket}, {&c.Namespace, def.Namespace}, {&c.Snapshotter, def.Snapshotter},
		{&c.Shim, def.Shim}, {&c.FIFODir, def.FIFODir}, {&c.FilesDir, def.FilesDir}, {&c.CgroupRoot, def.CgroupRoot},
	} {
		if *f.v == "" {
			*f.v = f.d
		}
	}
	if c.DefaultMemoryBytes == 0 {
		c.DefaultMemoryBytes = def.DefaultMemoryBytes
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = def.DialTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every field that is out of range (zero fields take
// their defaults first).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.DefaultMemoryBytes < minMemoryBytes {
		errs = append(errs, fmt.Errorf("defaultMemoryBytes %d is below %d", c.DefaultMemoryBytes, minMemoryBytes))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("dialTimeout %s is negative", c.DialTimeout))
	}
	if !identifier.MatchString(c.Namespace) {
		errs = append(errs, fmt.Errorf("namespace %q is not a containerd identifier", c.Namespace))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("container runtime config: %w", err)
	}
	return nil
}
