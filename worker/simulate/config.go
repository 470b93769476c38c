package simulate

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Defaults for Config's fields.
const (
	DefaultNamePrefix       = "sim"
	DefaultDataDir          = ".wasmorch-simulate"
	DefaultInstancesPerNode = 110 // Kubernetes' default pods per node
	DefaultMemoryBytes      = 64 << 30
	DefaultCPUMillis        = 64000
	DefaultZones            = 10
	DefaultConcurrency      = 32

	defaultReconnectBase = 100 * time.Millisecond
	defaultReconnectMax  = 5 * time.Second
	defaultReportRetry   = time.Second
)

// Labels every hollow node carries.
const (
	// LabelSimulated marks a hollow node ("true").
	LabelSimulated = "simulated"
	// LabelZone is set to z<i % Zones> on node i when Zones > 0.
	LabelZone = "zone"
)

// Config configures a Simulator. cobra fills it in cmd/wasmorch; New
// validates it.
type Config struct {
	// Servers are control-plane API addresses, HOST:PORT; each node uses
	// the first that answers.
	Servers []string `json:"servers" yaml:"servers"`
	// JoinToken is presented by each node that has no usable certificate
	// in DataDir yet; with certificates for every node it may be empty.
	JoinToken string `json:"joinToken" yaml:"joinToken"`
	// Nodes is how many hollow nodes to run, named NamePrefix-0000 and on.
	Nodes      int    `json:"nodes" yaml:"nodes"`
	NamePrefix string `json:"namePrefix" yaml:"namePrefix"`
	// DataDir holds each node's credential in DataDir/<node>/.
	DataDir string `json:"dataDir" yaml:"dataDir"`
	// The capacity each node registers: instance slots (0: unlimited),
	// memory and CPU.
	InstancesPerNode int32 `json:"instancesPerNode" yaml:"instancesPerNode"`
	MemoryBytes      int64 `json:"memoryBytes" yaml:"memoryBytes"`
	CPUMillis        int64 `json:"cpuMillis" yaml:"cpuMillis"`
	// Labels are given to every node, beside LabelSimulated and, when
	// Zones > 0, LabelZone.
	Labels map[string]string `json:"labels" yaml:"labels"`
	Zones  int               `json:"zones" yaml:"zones"`
	// Concurrency is how many nodes join or register at a time.
	Concurrency int          `json:"concurrency" yaml:"concurrency"`
	Logger      *slog.Logger `json:"-" yaml:"-"`

	// Reconnection backoff and the pause before a failed report is
	// retried; changed by tests.
	reconnectBase, reconnectMax, reportRetry time.Duration
}

// DefaultConfig returns a Config with every defaultable field set; Servers
// and Nodes (and JoinToken on a first run) are left to the caller.
func DefaultConfig() Config {
	return Config{
		NamePrefix:       DefaultNamePrefix,
		DataDir:          DefaultDataDir,
		InstancesPerNode: DefaultInstancesPerNode,
		MemoryBytes:      DefaultMemoryBytes,
		CPUMillis:        DefaultCPUMillis,
		Zones:            DefaultZones,
		Concurrency:      DefaultConcurrency,
	}
}

// nodeNamePattern is the control plane's rule for node names.
var nodeNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// Validate checks the config as a whole.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, errdefs.Invalidf(format, a...)) }
	if len(c.Servers) == 0 {
		bad("simulate: Servers needs at least one control-plane address")
	}
	for _, s := range c.Servers {
		if err := checkHostPort(s); err != nil {
			bad("simulate: server address %q: %v", s, err)
		}
	}
	if c.JoinToken != "" {
		if _, err := auth.ParseToken(c.JoinToken); err != nil {
			bad("simulate: join token: %v", err)
		}
	}
	if c.Nodes < 1 {
		bad("simulate: Nodes is %d; simulate at least one node", c.Nodes)
	}
	if !nodeNamePattern.MatchString(c.NamePrefix) {
		bad("simulate: name prefix %q cannot start a node name: use letters, digits, '-', '_' and '.'", c.NamePrefix)
	}
	if c.DataDir == "" {
		bad("simulate: DataDir is required")
	}
	if c.InstancesPerNode < 0 {
		bad("simulate: InstancesPerNode %d is negative", c.InstancesPerNode)
	}
	if c.MemoryBytes <= 0 {
		bad("simulate: MemoryBytes must be positive")
	}
	if c.CPUMillis <= 0 {
		bad("simulate: CPUMillis must be positive")
	}
	if c.Zones < 0 {
		bad("simulate: Zones %d is negative", c.Zones)
	}
	if c.Concurrency < 1 {
		bad("simulate: Concurrency must be at least 1")
	}
	for k := range c.Labels {
		switch {
		case k == "":
			bad("simulate: a label has an empty key")
		case k == LabelSimulated:
			bad("simulate: label %q is set by the simulator on every node", k)
		case k == LabelZone && c.Zones > 0:
			bad("simulate: label %q is set per node when Zones > 0; set Zones to 0 to give every node the same zone", k)
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.reconnectBase == 0 {
		c.reconnectBase = defaultReconnectBase
	}
	if c.reconnectMax == 0 {
		c.reconnectMax = defaultReconnectMax
	}
	if c.reportRetry == 0 {
		c.reportRetry = defaultReportRetry
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// NodeName is the name of hollow node i.
func (c Config) NodeName(i int) string { return fmt.Sprintf("%s-%04d", c.NamePrefix, i) }

// nodeLabels are the labels node i registers with.
func (c Config) nodeLabels(i int) map[string]string {
	labels := make(map[string]string, len(c.Labels)+2)
	for k, v := range c.Labels {
		labels[k] = v
	}
	labels[LabelSimulated] = "true"
	if c.Zones > 0 {
		labels[LabelZone] = "z" + strconv.Itoa(i%c.Zones)
	}
	return labels
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
