package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/internal/diskspace"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// defaultDiskCheckInterval is how often the worker reads the free space of
// its data dir's disk: one statfs, cheap next to a heartbeat.
const defaultDiskCheckInterval = time.Second

// diskWatch is the worker's DiskPressure condition (Kubernetes' node
// condition of that name): the disk of its data dir has less free than
// the configured floor. While it holds, the worker says so in every
// heartbeat, the scheduler places no new instance on the node, and the
// instance logs lose their rotated segments and stop growing, before the
// disk fills and takes down what writes to it (under `up`, etcd).
type diskWatch struct {
	dir        string
	minFree    int64 // bytes; <= 0: not a criterion
	minPercent int   // of the disk's size; <= 0: not a criterion
	// space reads the disk: diskspace.Of, replaced by tests.
	space func(dir string) (diskspace.Space, error)

	// checking serializes checks, so that a condition is published only
	// once the logs have acted on it.
	checking sync.Mutex
	mu       sync.Mutex
	pressure *pb.NodeCondition // nil while the disk has room; never modified once set
}

// floor is the free space below which the disk is under pressure.
func (d *diskWatch) floor(size int64) int64 {
	f := max(d.minFree, 0)
	if d.minPercent > 0 {
		f = max(f, size/100*int64(d.minPercent))
	}
	return f
}

// check reads the disk once. It returns the new condition (nil when the
// disk has room) and whether that changed, which the caller acts on, then
// publishes with set; the caller holds d.checking. Pressure ends only
// once the free space is a tenth above the floor, so that the logs
// evicted when it began do not make it flap.
func (d *diskWatch) check(now time.Time) (cond *pb.NodeCondition, changed bool, err error) {
	s, err := d.space(d.dir)
	if err != nil {
		return nil, false, err
	}
	floor := d.floor(s.Size)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.pressure == nil && s.Free < floor:
		return &pb.NodeCondition{
			Type: pb.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE,
			Message: fmt.Sprintf("the disk holding %s has %s free of %s, below the %s the worker keeps free",
				d.dir, diskspace.Bytes(s.Free), diskspace.Bytes(s.Size), diskspace.Bytes(floor)),
			SinceUnixNano: now.UnixNano(),
		}, true, nil
	case d.pressure != nil && s.Free >= floor+floor/10:
		return nil, true, nil
	}
	return d.pressure, false, nil
}

// set publishes the condition check returned, for the heartbeats.
func (d *diskWatch) set(cond *pb.NodeCondition) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pressure = cond
}

// conditions lists what holds now, for a heartbeat or a registration.
func (d *diskWatch) conditions() []*pb.NodeCondition {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pressure == nil {
		return nil
	}
	return []*pb.NodeCondition{d.pressure}
}

// watchDisk checks the disk now and every diskCheckInterval until ctx is
// done, acting on each change.
func (w *Worker) watchDisk(ctx context.Context) error {
	for {
		w.checkDisk()
		if !sleep(ctx, w.clock, w.diskCheckInterval) {
			return nil
		}
	}
}

// checkDisk reads the disk once and acts on a change: under pressure the
// logs give up their rotated segments and stop growing.
func (w *Worker) checkDisk() {
	w.disk.checking.Lock()
	defer w.disk.checking.Unlock()
	cond, changed, err := w.disk.check(w.clock.Now())
	if err != nil {
		w.logger.Warn("cannot read the free space of the data dir", "err", err)
		return
	}
	if !changed {
		return
	}
	if cond != nil {
		freed := w.logs.SetPressure(true)
		w.logger.Warn("disk pressure: placing no new instances here and keeping instance logs from growing",
			"why", cond.GetMessage(), "evictedLogBytes", freed)
	} else {
		w.logs.SetPressure(false)
		w.logger.Info("disk pressure is over", "dataDir", w.cfg.DataDir)
	}
	w.disk.set(cond)
	select {
	case w.conditionsChanged <- struct{}{}:
	default: // one is pending already
	}
}
