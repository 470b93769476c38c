package e2e

import (
	"context"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// BenchmarkLeaderFailover kills the member that runs the controllers (a
// real process, kill -9) in a three-member control plane and measures,
// from the kill, how long until (1) the API accepts a write again and (2)
// the instance that write asked for is scheduled onto a node. The client
// is the CLI's own (cliclient) holding all three members, in-process so
// that process start-up does not blur the figure.
//
//	go test ./e2e/ -run '^$' -bench LeaderFailover -benchtime 5x
func BenchmarkLeaderFailover(b *testing.B) {
	h := startHAClusterTB(b)
	startDaemon(b, "agent", h.env, "agent", "--server", h.servers(), "--token", h.serverToken, "--name", "bench-node",
		"--data-dir", b.TempDir(), "--listen", loopbackAddr(b, "127.0.0.40"))
	cred, err := cliclient.LoadCredential(filepath.Join(h.members[0].dataDir, "admin.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	client, err := cliclient.Dial(h.servers(), "bench", cliclient.WithCredential(cred, nil))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	waitFor(b, "the node Ready", func() bool {
		ns, err := client.ListNodes(ctx)
		return err == nil && len(ns) == 1 && ns[0].State == "Ready"
	})
	if r := run(b, h.env, "deploy", "testdata/ticker.wasm", "--name", "fo", "--replicas", "1", "--server", h.servers()); r.code != 0 {
		b.Fatalf("%s", r)
	}
	replicas := 1
	var writes, scheduled []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		leader := h.waitControllerLeader()
		b.StartTimer()
		leader.proc.stop(syscall.SIGKILL)
		killed := time.Now()
		replicas++
		waitFor(b, "a write accepted", func() bool {
			_, err := client.Scale(ctx, "fo", replicas)
			return err == nil
		})
		writes = append(writes, time.Since(killed))
		waitFor(b, "the new instance scheduled", func() bool {
			is, err := client.ListInstances(ctx, "fo")
			if err != nil {
				return false
			}
			placed := 0
			for _, i := range is {
				if i.Node != "" {
					placed++
				}
			}
			return placed == replicas
		})
		scheduled = append(scheduled, time.Since(killed))
		b.StopTimer()
		leader.proc.start()
		h.waitHealthy(3)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(median(writes).Milliseconds()), "ms-to-write")
	b.ReportMetric(float64(median(scheduled).Milliseconds()), "ms-to-schedule")
	b.ReportMetric(0, "ns/op")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// waitFor polls cond every 10 ms, for at most a minute.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for range 6000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("%s: never happened", what)
}

// waitControllerLeader returns the member running the controllers once
// every member agrees on it.
func (h *haCluster) waitControllerLeader() *member {
	var leader *member
	waitFor(h.t, "a controller leader", func() bool {
		l, _ := h.controllerLeader(h.members[0].api)
		leader = l
		return l != nil
	})
	return leader
}
