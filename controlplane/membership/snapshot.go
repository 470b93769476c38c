package membership

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// RestoreConfig says where a snapshot becomes a member's data dir.
type RestoreConfig struct {
	// Snapshot is the file `wasmorch snapshot save` wrote.
	Snapshot string
	// DataDir is the new member's data dir; it must not hold etcd data yet.
	DataDir string
	// Name and PeerAddr are the restored member's; the restored cluster
	// has this one member, and others join it afterwards.
	Name     string
	PeerAddr string
}

// Restore turns a snapshot into the data dir of a one-member
// cluster (etcd's own restore: the snapshot's integrity hash is checked,
// and the cluster gets a new identity so that it cannot mix with the old
// members). Start `wasmorch server` or `up` on DataDir afterwards.
func Restore(cfg RestoreConfig) error {
	if _, err := os.Stat(cfg.Snapshot); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if HasData(cfg.DataDir) {
		return fmt.Errorf("data dir %s already holds a member's state (%s); restore into an empty data dir", cfg.DataDir, Dir(cfg.DataDir))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	peerURL := PeerURL(cfg.PeerAddr)
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        cfg.Snapshot,
		Name:                cfg.Name,
		OutputDataDir:       Dir(cfg.DataDir),
		PeerURLs:            []string{peerURL},
		InitialCluster:      cfg.Name + "=" + peerURL,
		InitialClusterToken: "wasmorch",
		// Revisions go on far above any the old cluster reached, and
		// everything before is compacted, so that nothing that kept a
		// revision of the old cluster (a node session's resume point, a
		// watch) is taken as current in the new one: it starts over.
		RevisionBump:  1_000_000_000,
		MarkCompacted: true,
	})
	if err != nil {
		_ = os.RemoveAll(Dir(cfg.DataDir))
		return fmt.Errorf("restore %s: %w", cfg.Snapshot, err)
	}
	return nil
}
