package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
)

// BenchmarkRouteRebuild is what one change costs the route table against
// a rebuild of every route, with the cluster held in a member's cache
// over a real etcd: functions × 100 replicas on 100 nodes. The change is
// one replica of one function becoming ready (ns/op); full-ms is a pass
// over every route, as the periodic safety net does (and as every change
// did before the table followed the cache); full/change is their ratio.
// The change's cost should stay flat from 10,000 to 100,000 instances.
func BenchmarkRouteRebuild(b *testing.B) {
	const per, nodes = 100, 100
	k := newCluster(b)
	for n := range nodes {
		k.node(fmt.Sprintf("node-%03d", n), fmt.Sprintf("10.0.%d.%d:8080", n/250, n%250))
	}
	have := 0
	for _, functions := range []int{100, 1000} {
		for ; have < functions; have++ {
			wl := function(fmt.Sprintf("fn-%04d", have), fmt.Sprintf("/fn-%04d", have), "")
			k.queue(store.WorkloadsPrefix+wl.Name, wl)
			for j := range per {
				k.replica(wl, fmt.Sprintf("%s-%03d", wl.Name, j), fmt.Sprintf("node-%03d", j%nodes))
			}
		}
		k.flush()
		k.sync()
		b.Run(fmt.Sprintf("instances=%d", functions*per), func(b *testing.B) {
			read := func(fn func(source)) { k.c.Read(func(r cache.Reader) { fn(r) }) }
			bl := newBuilder()
			all := bl.update(read, &table{}, work{all: true}, nil)
			if len(all.routes) != functions {
				b.Fatalf("%d routes, want %d", len(all.routes), functions)
			}
			// The table before the change: fn-0042 without its last replica.
			name := "fn-0042"
			r := all.byName(name)
			before := *r
			before.replicas = r.replicas[:len(r.replicas)-1]
			prev := all.with(map[string]*route{name: &before})
			change := work{workloads: map[string]struct{}{name: {}}}

			const fulls = 3
			start := time.Now()
			for range fulls {
				if bl.update(read, prev, work{all: true}, nil) == prev {
					b.Fatal("a full pass found no change")
				}
			}
			full := time.Since(start) / fulls

			b.ResetTimer()
			start = time.Now()
			for range b.N {
				if t := bl.update(read, prev, change, nil); len(t.byName(name).replicas) != per {
					b.Fatalf("%s has %d replicas after the change, want %d", name, len(t.byName(name).replicas), per)
				}
			}
			one := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(full.Microseconds())/1000, "full-ms")
			b.ReportMetric(float64(full)/float64(one), "full/change")
		})
	}
}
