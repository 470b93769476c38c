package worker

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Defaults for Config's zero fields.
const (
	DefaultListenAddr          = "127.0.0.1:7071"
	DefaultMaxInstances        = 20000
	DefaultLogBytesPerInstance = 1 << 20
	DefaultStatusBatchInterval = 2 * time.Millisecond
	// DefaultFunctionMemoryWait is how long a function request waits for
	// memory unless Config.FunctionMemoryWait says otherwise.
	DefaultFunctionMemoryWait = time.Second
	// DefaultFunctionMemoryQueue is how many function requests may wait
	// for memory at once unless Config.FunctionMemoryQueue says otherwise.
	DefaultFunctionMemoryQueue = 1000

	// The default reserved memory (Config.ReservedMemoryBytes): a tenth of
	// the node's memory, at least minDefaultReserved, never more than half.
	defaultReservedShare = 10
	minDefaultReserved   = 256 << 20
	// DefaultLogBytesTotal bounds all instance logs of a node together.
	DefaultLogBytesTotal = 1 << 30
	// DefaultDiskPressureFree and DefaultDiskPressureFreePercent: the
	// disk of the data dir is under pressure with less free than either.
	DefaultDiskPressureFree        = 512 << 20
	DefaultDiskPressureFreePercent = 5
	// DefaultStopGrace is how long a stopping instance has to end on its
	// own: a function replica's requests in flight to finish, a
	// container's process after SIGTERM. Then it is ended (SIGKILL).
	DefaultStopGrace = 5 * time.Second

	minLogBytesPerInstance = 4 << 10

	// DefaultMaxScratchBytes is the most scratch space one instance may
	// have on a node (state: WorkloadSpec.scratch_bytes).
	DefaultMaxScratchBytes = 1 << 30
	// DefaultModuleCacheBytes bounds the modules (and image archives) a
	// node keeps on disk beside those its instances use, and its compiled
	// code as much again: small enough for an SD card, and room for a
	// hundred Go modules.
	DefaultModuleCacheBytes = 512 << 20
	// DefaultVolumeGCInterval is how often a worker looks for removed
	// volumes to delete.
	DefaultVolumeGCInterval = 30 * time.Second
)

// Subdirectories of Config.DataDir.
const (
	modulesDir = "modules"
	compileDir = "compile"
	logsDir    = "logs"
)

// Config configures a worker. Zero fields take the defaults that
// DefaultConfig fills in; DataDir, Servers and Runtimes are required.
type Config struct {
	NodeName            string            `json:"nodeName" yaml:"nodeName"`
	DataDir             string            `json:"dataDir" yaml:"dataDir"`
	Servers             []string          `json:"servers" yaml:"servers"`
	ListenAddr          string            `json:"listenAddr" yaml:"listenAddr"`
	AdvertiseAddr       string            `json:"advertiseAddr" yaml:"advertiseAddr"`
	FunctionListenAddr  string            `json:"functionListenAddr" yaml:"functionListenAddr"` // HTTP function server; empty: DefaultFunctionListenAddr
	LocalHTTPAddr       string            `json:"localHTTPAddr" yaml:"localHTTPAddr"`           // this node's functions to local clients, plain HTTP (localhttp.go); empty: none
	Labels              map[string]string `json:"labels" yaml:"labels"`
	MemoryBytes         int64             `json:"memoryBytes" yaml:"memoryBytes"`
	MaxInstances        int32             `json:"maxInstances" yaml:"maxInstances"`
	LogBytesPerInstance int64             `json:"logBytesPerInstance" yaml:"logBytesPerInstance"`
	// LogBytesTotal bounds the output kept by all instances together, over
	// LogBytesPerInstance each: beyond it the oldest output is evicted
	// (rotated segments first). Zero: DefaultLogBytesTotal.
	LogBytesTotal int64 `json:"logBytesTotal" yaml:"logBytesTotal"`
	// DiskPressureFree and DiskPressureFreePercent: the node reports
	// DiskPressure (no new instances; logs evicted and held) while the
	// disk of DataDir has less free than DiskPressureFree bytes or than
	// DiskPressureFreePercent of its size. Zero: the defaults; negative:
	// not a criterion.
	DiskPressureFree        int64         `json:"diskPressureFree" yaml:"diskPressureFree"`
	DiskPressureFreePercent int           `json:"diskPressureFreePercent" yaml:"diskPressureFreePercent"`
	StatusBatchInterval     time.Duration `json:"statusBatchInterval" yaml:"statusBatchInterval"`
	// StopGrace is how long an instance that is no longer wanted has to
	// end on its own before it is ended; zero: DefaultStopGrace.
	StopGrace time.Duration        `json:"stopGrace" yaml:"stopGrace"`
	Runtimes  []runtimeapi.Runtime `json:"-" yaml:"-"`
	// Registry, if set, receives the worker's metrics (metrics.go).
	Registry prometheus.Registerer `json:"-" yaml:"-"`
	Logger   *slog.Logger          `json:"-" yaml:"-"`
	// security: JoinToken is presented once, when DataDir/pki holds no
	// usable node certificate, to receive one (see identity.go).
	JoinToken string `json:"joinToken" yaml:"joinToken"`
	// ColdReplicaIdle is how long the function server keeps a function it
	// served without a replica (a cold start) after its last request;
	// zero: funcserver.DefaultColdIdle.
	ColdReplicaIdle time.Duration `json:"coldReplicaIdle" yaml:"coldReplicaIdle"`
	// GCPercent is the Go GC's target (debug.SetGCPercent) set by New,
	// unless the GOGC environment variable is set; see gc.go. Negative
	// leaves the process's setting alone.
	GCPercent int `json:"gcPercent" yaml:"gcPercent"`
	// GCMemoryLimit is the Go runtime's soft memory limit
	// (debug.SetMemoryLimit) set by New, unless GOMEMLIMIT is set; zero
	// means half of MemoryBytes, negative leaves it alone.
	GCMemoryLimit int64 `json:"gcMemoryLimit" yaml:"gcMemoryLimit"`
	// ReservedMemoryBytes is the part of MemoryBytes kept for the system
	// and for wasmorch itself (in `up`, the control plane too), as
	// Kubernetes' --system-reserved: the instances assigned to the node
	// and the function requests it runs share the rest, the node's
	// allocatable memory (Allocatable), which is the memory capacity the
	// node registers. Zero: a tenth of MemoryBytes, at least 256 MiB and
	// at most half; negative: nothing.
	ReservedMemoryBytes int64 `json:"reservedMemoryBytes" yaml:"reservedMemoryBytes"`
	// FunctionMemoryWait bounds how long a Wasm function request waits
	// for memory when the budget is in use, before it is answered 503
	// (with Retry-After); zero: DefaultFunctionMemoryWait.
	FunctionMemoryWait time.Duration `json:"functionMemoryWait" yaml:"functionMemoryWait"`
	// FunctionMemoryQueue bounds how many function requests wait for
	// memory at once; beyond, they are answered 503 at once. Zero:
	// DefaultFunctionMemoryQueue.
	FunctionMemoryQueue int `json:"functionMemoryQueue" yaml:"functionMemoryQueue"`
	// MaxScratchBytes is the most scratch space (a writable /tmp, see
	// storage.go) one instance may have on the node, which the node
	// registers; zero: DefaultMaxScratchBytes; negative: none.
	MaxScratchBytes int64 `json:"maxScratchBytes" yaml:"maxScratchBytes"`
	// AllowedMounts are the host directories (absolute) that instances may
	// mount, with what is below them (state: deploy --mount); none by
	// default. The node registers them.
	AllowedMounts []string `json:"allowedMounts" yaml:"allowedMounts"`
	// VolumeGCInterval is how often the worker asks for the volumes
	// removed (`volume rm`) whose directories it is to delete, besides
	// after each (re)connection; zero: DefaultVolumeGCInterval.
	VolumeGCInterval time.Duration `json:"volumeGCInterval" yaml:"volumeGCInterval"`
	// edge: ModuleCacheBytes bounds the module cache on disk
	// (worker/modcache): the least recently used modules no instance on
	// the node uses are evicted past it, and a module larger than it is
	// refused (the instance fails with ReasonModuleTooLarge and the
	// control plane places it elsewhere). The compiled-code cache is
	// trimmed to as much, oldest first. Zero: DefaultModuleCacheBytes;
	// negative: no bound.
	ModuleCacheBytes int64 `json:"moduleCacheBytes" yaml:"moduleCacheBytes"`
}

// Allocatable is the memory the node's instances and function requests
// share: MemoryBytes less ReservedMemoryBytes (defaults filled in).
func (c Config) Allocatable() int64 {
	c = c.withDefaults()
	return c.MemoryBytes - max(0, c.ReservedMemoryBytes)
}

// DefaultConfig returns a Config with every defaultable field set.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

// CompileCacheDir is where the runtimes should keep compiled code
// (wasmrt.Config.CacheDir): DataDir/compile.
func (c Config) CompileCacheDir() string {
	if c.DataDir == "" {
		return ""
	}
	return filepath.Join(c.DataDir, compileDir)
}

func (c Config) withDefaults() Config {
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname() // Validate reports it if still empty.
	}
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = totalMemory()
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = DefaultMaxInstances
	}
	if c.LogBytesPerInstance == 0 {
		c.LogBytesPerInstance = DefaultLogBytesPerInstance
	}
	if c.LogBytesTotal == 0 {
		c.LogBytesTotal = DefaultLogBytesTotal
	}
	if c.DiskPressureFree == 0 {
		c.DiskPressureFree = DefaultDiskPressureFree
	}
	if c.DiskPressureFreePercent == 0 {
		c.DiskPressureFreePercent = DefaultDiskPressureFreePercent
	}
	if c.StatusBatchInterval == 0 {
		c.StatusBatchInterval = DefaultStatusBatchInterval
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.GCPercent == 0 {
		c.GCPercent = DefaultGCPercent
	}
	if c.GCMemoryLimit == 0 {
		c.GCMemoryLimit = c.MemoryBytes / 2
	}
	if c.ReservedMemoryBytes == 0 {
		c.ReservedMemoryBytes = min(max(c.MemoryBytes/defaultReservedShare, minDefaultReserved), c.MemoryBytes/2)
	}
	if c.FunctionMemoryWait == 0 {
		c.FunctionMemoryWait = DefaultFunctionMemoryWait
	}
	if c.FunctionMemoryQueue == 0 {
		c.FunctionMemoryQueue = DefaultFunctionMemoryQueue
	}
	if c.VolumeGCInterval == 0 {
		c.VolumeGCInterval = DefaultVolumeGCInterval
	}
	if c.MaxScratchBytes == 0 {
		c.MaxScratchBytes = DefaultMaxScratchBytes
	}
	if c.ModuleCacheBytes == 0 {
		c.ModuleCacheBytes = DefaultModuleCacheBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the config as New would use it (zero fields defaulted).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, errdefs.Invalidf(format, a...)) }
	if c.NodeName == "" {
		bad("worker: NodeName is empty and the host name is unknown")
	}
	if c.DataDir == "" {
		bad("worker: DataDir is required")
	}
	if len(c.Servers) == 0 {
		bad("worker: Servers needs at least one control-plane address")
	}
	for _, s := range c.Servers {
		if err := checkHostPort(s); err != nil {
			bad("worker: server address %q: %v", s, err)
		}
	}
	if err := checkHostPort(c.ListenAddr); err != nil {
		bad("worker: ListenAddr %q: %v", c.ListenAddr, err)
	}
	if c.LocalHTTPAddr != "" {
		if err := checkHostPort(c.LocalHTTPAddr); err != nil {
			bad("worker: LocalHTTPAddr %q: %v", c.LocalHTTPAddr, err)
		}
	}
	if c.AdvertiseAddr != "" {
		if err := checkHostPort(c.AdvertiseAddr); err != nil {
			bad("worker: AdvertiseAddr %q: %v", c.AdvertiseAddr, err)
		}
	}
	if c.MemoryBytes <= 0 {
		bad("worker: MemoryBytes must be positive (total memory could not be read from /proc/meminfo)")
	}
	if c.MemoryBytes > 0 && c.ReservedMemoryBytes >= c.MemoryBytes {
		bad("worker: ReservedMemoryBytes %d leaves none of the node's %d bytes of memory to instances", c.ReservedMemoryBytes, c.MemoryBytes)
	}
	if c.FunctionMemoryWait < 0 {
		bad("worker: FunctionMemoryWait %s is negative", c.FunctionMemoryWait)
	}
	if c.FunctionMemoryQueue < 0 {
		bad("worker: FunctionMemoryQueue %d is negative", c.FunctionMemoryQueue)
	}
	if c.MaxInstances < 0 {
		bad("worker: MaxInstances %d is negative", c.MaxInstances)
	}
	if c.LogBytesPerInstance < minLogBytesPerInstance {
		bad("worker: LogBytesPerInstance %d is below the minimum of %d", c.LogBytesPerInstance, minLogBytesPerInstance)
	}
	if c.LogBytesTotal < 2*c.LogBytesPerInstance {
		bad("worker: LogBytesTotal %d is below twice LogBytesPerInstance (%d)", c.LogBytesTotal, c.LogBytesPerInstance)
	}
	if c.DiskPressureFreePercent > 100 {
		bad("worker: DiskPressureFreePercent %d is above 100", c.DiskPressureFreePercent)
	}
	if c.StatusBatchInterval < 0 {
		bad("worker: StatusBatchInterval %s is negative", c.StatusBatchInterval)
	}
	for _, d := range c.AllowedMounts {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d {
			bad("worker: AllowedMounts %q is not a clean absolute path", d)
		}
	}
	if c.StopGrace < 0 {
		bad("worker: StopGrace %s is negative", c.StopGrace)
	}
	if len(c.Runtimes) == 0 {
		bad("worker: Runtimes needs at least one runtime")
	}
	seen := map[string]bool{}
	for i, rt := range c.Runtimes {
		switch {
		case rt == nil:
			bad("worker: Runtimes[%d] is nil", i)
		case rt.Name() == "":
			bad("worker: Runtimes[%d] has no name", i)
		case seen[rt.Name()]:
			bad("worker: two runtimes are named %q", rt.Name())
		default:
			seen[rt.Name()] = true
		}
	}
	return errors.Join(errs...)
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// totalMemory reads MemTotal from /proc/meminfo; 0 if it cannot.
func totalMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// advertiseAddr is the address to register: the configured one, else the
// bound one, with an unspecified host (0.0.0.0, ::) replaced by an address
// other machines can reach.
func advertiseAddr(configured string, bound net.Addr) string {
	if configured != "" {
		return configured
	}
	tcp, ok := bound.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return bound.String()
	}
	return net.JoinHostPort(reachableIP(), strconv.Itoa(tcp.Port))
}

// reachableIP picks the first global unicast IPv4 address of this host.
func reachableIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
