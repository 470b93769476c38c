package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
)

// Config configures one control-plane member. cobra and viper fill it in
// cmd/; nothing in this package reads flags or the environment.
type Config struct {
	// Name is this member's name in the etcd cluster and in elections.
	Name string `json:"name" yaml:"name"`
	// DataDir holds the member's state; etcd's data lives in DataDir/etcd.
	DataDir string `json:"dataDir" yaml:"dataDir"`
	// APIAddr is where the gRPC API listens ("127.0.0.1:0" picks a port).
	APIAddr string `json:"apiAddr" yaml:"apiAddr"`
	// HTTPAddr is where the HTTP gateway, /healthz and /metrics listen.
	HTTPAddr string `json:"httpAddr" yaml:"httpAddr"`
	// EtcdClientAddr and EtcdPeerAddr are etcd's own listeners; loopback
	// with a free port by default, since clients go through the gRPC API.
	EtcdClientAddr string `json:"etcdClientAddr" yaml:"etcdClientAddr"`
	EtcdPeerAddr   string `json:"etcdPeerAddr" yaml:"etcdPeerAddr"`
	// HeartbeatInterval is how often workers heartbeat; NodeGrace is how
	// long a node may stay silent before it is NotReady.
	HeartbeatInterval time.Duration `json:"heartbeatInterval" yaml:"heartbeatInterval"`
	NodeGrace         time.Duration `json:"nodeGrace" yaml:"nodeGrace"`
	// ElectionTTL bounds how long a dead leader keeps its leadership.
	ElectionTTL time.Duration `json:"electionTTL" yaml:"electionTTL"`
	Logger      *slog.Logger  `json:"-" yaml:"-"`
}

// DefaultConfig returns the defaults `wasmorch up` and `server` start with.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "wasmorch"
	}
	return Config{
		Name:              name,
		DataDir:           ".wasmorch",
		APIAddr:           "127.0.0.1:7070",
		HTTPAddr:          "127.0.0.1:8080",
		EtcdClientAddr:    "127.0.0.1:0",
		EtcdPeerAddr:      "127.0.0.1:0",
		HeartbeatInterval: 500 * time.Millisecond,
		NodeGrace:         2 * time.Second,
		ElectionTTL:       2 * time.Second,
	}
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name must not be empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir must not be empty"))
	}
	for flag, addr := range map[string]string{"api": c.APIAddr, "http": c.HTTPAddr, "etcd client": c.EtcdClientAddr, "etcd peer": c.EtcdPeerAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q is not host:port", flag, addr))
		}
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("heartbeat interval must be positive"))
	}
	if c.NodeGrace < 2*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("node grace %s must be at least twice the heartbeat interval %s", c.NodeGrace, c.HeartbeatInterval))
	}
	if c.ElectionTTL < time.Second {
		errs = append(errs, errors.New("election TTL must be at least 1s"))
	}
	return errors.Join(errs...)
}
