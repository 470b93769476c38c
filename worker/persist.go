package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The agent keeps on its own disk what it needs to run without its
// control plane (docs/edge.md, "Cut off from the control plane"): the
// desired set it last received, with the revision it is current to, and
// what it knows of each instance that ran: its restart count and, for one
// that finished for good (exited, and its restart policy does not run it
// again), its final status. An agent restarted (or a board rebooted) while
// no member can be reached runs that set again: the same instance IDs, the
// restarts counted on, the finished jobs not run again, their logs kept.
// When a member answers, the session resumes from the kept revision and
// the worker converges as it would after a broken stream: what still
// matches is left running.
//
// The file is DataDir/state/desired (0600, in a 0700 directory, like the
// node's key in DataDir/pki): the instance records hold their specs, and
// with them the contents of the config and secret files the instances
// mount, which are thus at rest on the node. It is written whole, to a
// temporary file that is synced and then renamed over the old one (and
// the directory synced), at most once per persistInterval, after each
// change: an agent killed between two writes resumes from the previous
// one, a consistent set and revision, and the session brings it up to
// date. A file that cannot be read (torn, corrupt, of another cluster or
// node) is ignored with a log line: the agent starts empty, as before it
// kept one, and the control plane sends the set again.

const (
	stateDir  = "state"
	stateFile = "desired"
	// stateMagic opens the file; the version is its format's.
	stateMagic = "wasmorch desired set v1\n"
	// defaultPersistInterval spaces the writes of the file: a burst of
	// changes (a rollout, a crash-looping instance) costs one write a
	// second at most.
	defaultPersistInterval = time.Second
	// resumeHold is how long a worker that restored its set from disk
	// waits for a session message before it runs that set anyway (it runs
	// it at once when a round of connection attempts fails).
	resumeHold = 10 * time.Second
	// maxStateSection bounds one section of the file when it is read: a
	// desired set of 20,000 instances is ~5 MB.
	maxStateSection = 256 << 20
)

// persistState is the worker's side of the file.
type persistState struct {
	path     string
	interval time.Duration
	kick     chan struct{} // capacity 1: something worth writing changed
	// resumed holds, by instance ID, what the file said of the instances
	// of the restored set that the worker has not created yet; guarded by
	// Worker.mu.
	resumed map[string]*pb.InstanceStatus
}

func newPersistState(dataDir string) persistState {
	return persistState{
		path:     filepath.Join(dataDir, stateDir, stateFile),
		interval: defaultPersistInterval,
		kick:     make(chan struct{}, 1),
		resumed:  map[string]*pb.InstanceStatus{},
	}
}

// savedState is the file's content.
type savedState struct {
	cluster string // the pin of the cluster CA the node's certificate is from
	node    string
	set     *pb.Assignments // full; its revision
	known   *pb.StatusBatch // per instance that ran: restarts, final status
	saved   time.Time       // when it was written (the file's mtime)
}

// persistSoon has the file written soon: the desired set, a restart count
// or a final status changed.
func (w *Worker) persistSoon() {
	select {
	case w.persist.kick <- struct{}{}:
	default:
	}
}

// clusterPin is the pin of the CA of the node's credential, to which the
// file is bound.
func (w *Worker) clusterPin() (string, error) {
	nc, err := auth.LoadNodeCredential(w.pkiDir())
	if err != nil {
		return "", err
	}
	ca, err := auth.ParseCertificate(nc.CAPEM)
	if err != nil {
		return "", err
	}
	return auth.PinOf(ca), nil
}

// restoreState reads the file (in New, once the node's credential is
// loaded) and, when it is this node's in this cluster, makes its set the
// desired set, held until a session message arrives or the control plane
// proves out of reach (releaseRestored). It says whether it restored
// instances to run (or, edge, functions to start cold on the local
// listener).
func (w *Worker) restoreState() bool {
	if w.id == nil {
		return false // joining: the file, if any, is of an earlier membership
	}
	st, err := readState(w.persist.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false
	case err != nil:
		w.logger.Warn("the desired set kept on disk cannot be read: starting without it; the control plane sends it again", "file", w.persist.path, "err", err)
		return false
	}
	pin, err := w.clusterPin()
	switch {
	case err != nil:
		w.logger.Warn("the desired set kept on disk is not used: the node's credential cannot be read", "file", w.persist.path, "err", err)
		return false
	case st.cluster != pin || st.node != w.cfg.NodeName:
		w.logger.Warn("the desired set kept on disk is another node's or another cluster's: starting without it", "file", w.persist.path, "node", st.node)
		return false
	}
	fns := st.set.GetLocalFunctions()
	if w.cfg.LocalHTTPAddr == "" {
		fns = nil // edge: kept by an agent started with --local-http before; this one serves none
	}
	w.desired.restore(st.set.GetInstances(), fns, st.set.GetRevision())
	wanted := make(map[string]bool, len(st.set.GetInstances()))
	for _, rec := range st.set.GetInstances() {
		wanted[rec.GetId()] = true
	}
	w.mu.Lock()
	for _, s := range st.known.GetStatuses() {
		if wanted[s.GetId()] {
			w.persist.resumed[s.GetId()] = s
		}
	}
	w.mu.Unlock()
	w.logger.Info("restored the desired set kept on disk", "instances", len(st.set.GetInstances()), "local functions", len(fns), "revision", st.set.GetRevision(),
		"saved", st.saved.UTC().Format(time.RFC3339))
	return len(st.set.GetInstances()) > 0 || len(fns) > 0
}

// releaseRestored runs the set restored from disk, if it is still held:
// the control plane could not be reached (or said nothing for resumeHold).
func (w *Worker) releaseRestored(why string) {
	if !w.desired.release() {
		return
	}
	_, rev, _ := w.desired.snapshot()
	w.logger.Warn("running the desired set kept on disk: "+why, "revision", rev)
	w.releaseLocalFunctions() // localcold.go
	w.kickReconcile()
}

// resumeLocked gives a new instance what the file said of it: its restart
// count (the coming start counts as a restart: the instance ran in an
// earlier agent process) and, when it had finished for good, its final
// status, which it keeps without running again. The caller holds w.mu.
func (w *Worker) resumeLocked(in *instance) {
	st, ok := w.persist.resumed[in.id()]
	if !ok {
		return
	}
	delete(w.persist.resumed, in.id())
	in.restarts, in.everStarted = st.GetRestarts(), true
	if !st.GetExited() {
		return
	}
	st = proto.Clone(st).(*pb.InstanceStatus)
	st.Node = w.cfg.NodeName
	st.UpdatedUnixNano = w.clock.Now().UnixNano()
	in.done = true
	in.status = st
	w.statuses.add(st)
}

// knownInstances is what the file keeps of the instances: each that ran
// with its restart count, and the final status of each that finished for
// good; and what the file said of those of set not created yet (those no
// longer in set are forgotten).
func (w *Worker) knownInstances(set []*pb.Instance) []*pb.InstanceStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*pb.InstanceStatus, 0, len(w.instances)+len(w.persist.resumed))
	if len(w.persist.resumed) > 0 {
		wanted := make(map[string]bool, len(set))
		for _, rec := range set {
			wanted[rec.GetId()] = true
		}
		for id, st := range w.persist.resumed {
			if !wanted[id] {
				delete(w.persist.resumed, id)
				continue
			}
			out = append(out, st)
		}
	}
	for _, in := range w.instances {
		in.mu.Lock()
		switch {
		case in.done && in.status != nil:
			out = append(out, in.status)
		case in.everStarted:
			out = append(out, &pb.InstanceStatus{Id: in.id(), Restarts: in.restarts})
		}
		in.mu.Unlock()
	}
	return out
}

// persistLoop writes the file after each change, at most once per
// interval, until ctx is done, and a last time then if a change is still
// unwritten.
func (w *Worker) persistLoop(ctx context.Context) error {
	pin, err := w.clusterPin()
	if err != nil {
		w.logger.Warn("the desired set is not kept on disk: the node's credential cannot be read", "err", err)
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			select {
			case <-w.persist.kick:
				w.saveState(pin)
			default:
			}
			return nil
		case <-w.persist.kick:
		}
		w.saveState(pin)
		if !sleep(ctx, realClock{}, w.persist.interval) {
			// Shutting down: what changed meanwhile is written above.
			continue
		}
	}
}

// saveState writes the file, if the worker has a desired set.
func (w *Worker) saveState(pin string) {
	set, rev, ok := w.desired.snapshot()
	if !ok {
		return
	}
	st := savedState{
		cluster: pin,
		node:    w.cfg.NodeName,
		set: &pb.Assignments{Full: true, Revision: rev, Instances: set,
			LocalFunctions: w.desired.functions(), LocalFunctionsFull: true}, // edge: localcold.go
		known: &pb.StatusBatch{Node: w.cfg.NodeName, Statuses: w.knownInstances(set)},
	}
	if err := writeState(w.persist.path, st); err != nil {
		w.logger.Warn("could not keep the desired set on disk", "file", w.persist.path, "err", err)
	}
}

// The file: stateMagic, then three sections, each a 4-byte big-endian
// length, a 4-byte CRC-32C of its bytes, and its bytes: a header
// ("cluster PIN\nnode NAME\n"), the set (a full pb.Assignments) and the
// instances (a pb.StatusBatch).

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeState(st savedState) ([]byte, error) {
	set, err := proto.Marshal(st.set)
	if err != nil {
		return nil, err
	}
	known, err := proto.Marshal(st.known)
	if err != nil {
		return nil, err
	}
	header := []byte("cluster " + st.cluster + "\nnode " + st.node + "\n")
	var b bytes.Buffer
	b.Grow(len(stateMagic) + 24 + len(header) + len(set) + len(known))
	b.WriteString(stateMagic)
	for _, sec := range [][]byte{header, set, known} {
		var h [8]byte
		binary.BigEndian.PutUint32(h[:4], uint32(len(sec)))
		binary.BigEndian.PutUint32(h[4:], crc32.Checksum(sec, castagnoli))
		b.Write(h[:])
		b.Write(sec)
	}
	return b.Bytes(), nil
}

func decodeState(b []byte) (savedState, error) {
	var st savedState
	rest, ok := bytes.CutPrefix(b, []byte(stateMagic))
	if !ok {
		return st, errors.New("not a desired-set file of this version (its first line is not " + strings.TrimSpace(stateMagic) + ")")
	}
	var secs [3][]byte
	for i := range secs {
		if len(rest) < 8 {
			return st, fmt.Errorf("cut short in section %d of 3", i+1)
		}
		n, sum := binary.BigEndian.Uint32(rest[:4]), binary.BigEndian.Uint32(rest[4:8])
		rest = rest[8:]
		if n > maxStateSection || int(n) > len(rest) {
			return st, fmt.Errorf("cut short in section %d of 3 (%d bytes announced, %d left)", i+1, n, len(rest))
		}
		secs[i], rest = rest[:n], rest[n:]
		if crc32.Checksum(secs[i], castagnoli) != sum {
			return st, fmt.Errorf("section %d of 3 does not match its checksum", i+1)
		}
	}
	if len(rest) != 0 {
		return st, fmt.Errorf("%d bytes after the last section", len(rest))
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(secs[0]), "\n"), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "cluster":
			st.cluster = v
		case "node":
			st.node = v
		}
	}
	st.set, st.known = &pb.Assignments{}, &pb.StatusBatch{}
	if err := proto.Unmarshal(secs[1], st.set); err != nil {
		return st, fmt.Errorf("the set: %w", err)
	}
	if err := proto.Unmarshal(secs[2], st.known); err != nil {
		return st, fmt.Errorf("the instances: %w", err)
	}
	if !st.set.GetFull() {
		return st, errors.New("the set is not a full set")
	}
	return st, nil
}

// readState reads the file at path; fs.ErrNotExist when there is none.
func readState(path string) (savedState, error) {
	f, err := os.Open(path)
	if err != nil {
		return savedState{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return savedState{}, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return savedState{}, err
	}
	st, err := decodeState(b)
	st.saved = fi.ModTime()
	return st, err
}

// writeState replaces the file at path with st: a temporary file beside
// it, synced, renamed over it, and the directory synced, so that the file
// is either the old one or the new one whatever happens meanwhile.
func writeState(path string, st savedState) error {
	b, err := encodeState(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
