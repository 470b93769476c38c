package scale

import (
	"strings"
	"testing"
	"time"
)

// TestReportTable checks the table the benchmark prints, from made-up
// results: figures with their ratio to the first point, notes in place of
// what failed, and a point not reached.
func TestReportTable(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	set, err := settingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	r := &scaleRun{set: set, rssEmpty: 40 << 20, rssNodes: 200 << 20, atNodes: 600, started: time.Now()}
	r.results = []*pointResult{
		{point: 10000, instances: 10600, added: 9400, populate: 10 * time.Second,
			bound: ms(100, 150, 300), running: ms(110, 160, 320), get: ms(20, 30), list: ms(25, 35),
			fullList: ms(290, 300, 310), fullCount: 10600, heal: 2 * time.Second,
			burst: 10000, burstTook: time.Second, storedTook: 500 * time.Millisecond, rss: 300 << 20, db: 64 << 20, took: 3 * time.Minute},
		{point: 50000, instances: 50600, added: 29400, populate: 100 * time.Second,
			bound: ms(500, 700, 900), running: ms(510, 720, 950), get: ms(150, 200), list: ms(160, 210),
			fullErr: "fails: ResourceExhausted: grpc: received message larger than max (7000000 vs. 4194304)",
			healErr: "not healed: not within 3m0s", burst: 10000, burstTook: 4 * time.Second,
			rss: 900 << 20, db: 300 << 20, took: 12 * time.Minute},
		{point: 200000, notReason: "not reached: stalled at 90,000/200,000 Running for 2m0s", instances: 200000, ready: 90000,
			bound: ms(2000), runningErr: "not measured: the point was not reached", healErr: "not measured: the point was not reached",
			getErr: "fails: DeadlineExceeded: context deadline exceeded", listErr: "fails: DeadlineExceeded: context deadline exceeded",
			fullErr:  "fails: ResourceExhausted: grpc: received message larger than max (27000000 vs. 4194304)",
			burstErr: "not within 5m0s (last seen: 0/10000 bound)", rssErr: "gone", dbErr: "gone", took: 20 * time.Minute},
		{point: 400000, notReason: "not attempted: too little of the test's -timeout left"},
	}
	var out strings.Builder
	r.report(&out)
	table := out.String()
	for _, want := range []string{
		"| scale point (instances) | 10,000 | 50,000 | 200,000 | 400,000 |",
		"| **not reached: stalled at 90,000/200,000 Running for 2m0s**; measured with 200,000 instances, 90,000 of them Running | **not attempted: too little of the test's -timeout left** |",
		"| 2.00 s / 2.00 s (×13.3 / ×6.7) | — |",
		"| 150 ms / 300 ms | 700 ms / 900 ms (×4.7 / ×3.0) |",
		"| fails: ResourceExhausted: grpc: received message larger than max",
		"| 10,000 placements/s (10,000 in 1.00 s) | 2,500 placements/s (10,000 in 4.00 s) (×0.2) |",
		"| 2.00 s | not healed: not within 3m0s |",
		"| 10,600 | 50,600 (×4.8) | **not reached",
		"| 300 MiB | 900 MiB (×3.0) | gone | — |",
		"| member RSS per instance, beyond the member with every node Ready | 10.2 KiB | 14.3 KiB (×1.4) |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 200000: "200,000", 1234567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{2500 * time.Microsecond: "2.5 ms", 149 * time.Millisecond: "149 ms", 2080 * time.Millisecond: "2.08 s", 90 * time.Second: "1m30s"} {
		if got := dur(d); got != want {
			t.Errorf("dur(%v) = %q, want %q", d, got, want)
		}
	}
	twenty := make([]time.Duration, 20)
	for i := range twenty {
		twenty[i] = time.Duration(20-i) * time.Millisecond
	}
	if p50, p99 := quantile(twenty, 0.5), quantile(twenty, 0.99); p50 != 10*time.Millisecond || p99 != 20*time.Millisecond {
		t.Errorf("p50, p99 of 1..20 ms = %v, %v; want 10 ms, 20 ms", p50, p99)
	}
}
