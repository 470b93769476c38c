package scale

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/status"
)

// cell is one figure of the table: its values (compared with the first
// point's), how they read, and a note in place of them (an error, a point
// not reached).
type cell struct {
	vals []float64
	text string
	note string
}

// row is one line of the table: what it measures and its cell at a point.
type row struct {
	what string
	at   func(*pointResult) cell
}

func (r *scaleRun) rows() []row {
	return []row{
		{"instances in the cluster when measured", func(p *pointResult) cell {
			switch {
			case p.notReason != "" && p.instances == 0:
				return cell{note: "**" + p.notReason + "**"}
			case p.notReason != "":
				return cell{note: fmt.Sprintf("**%s**; measured with %s instances, %s of them Running", p.notReason, count(p.instances), count(p.ready))}
			}
			return cell{vals: []float64{float64(p.instances)}, text: count(p.instances)}
		}},
		{"status reports ingested while populating (instances reaching Running per second)", func(p *pointResult) cell {
			if p.notReason != "" || p.populate <= 0 {
				return cell{note: "—"}
			}
			rate := float64(p.added) / p.populate.Seconds()
			return cell{vals: []float64{rate}, text: fmt.Sprintf("%s/s (%s in %s)", count(int(rate)), count(p.added), dur(p.populate))}
		}},
		{fmt.Sprintf("apply of a 1-replica workload → bound, p50 / p99 (%d trials)", r.set.trials), func(p *pointResult) cell {
			return percentiles(p.bound, p.trialErr)
		}},
		{"apply of a 1-replica workload → Running, p50 / p99", func(p *pointResult) cell {
			if len(p.running) == 0 && p.runningErr != "" {
				return cell{note: p.runningErr}
			}
			return percentiles(p.running, p.trialErr)
		}},
		{fmt.Sprintf("GetWorkload of one workload, p50 / p99 (up to %d calls)", r.set.reads), func(p *pointResult) cell {
			return percentiles(p.get, p.getErr)
		}},
		{"ListInstances of one workload, p50 / p99", func(p *pointResult) cell {
			return percentiles(p.list, p.listErr)
		}},
		{"ListInstances of every instance, every page (median of 3)", func(p *pointResult) cell {
			if p.fullErr != "" {
				return cell{note: p.fullErr}
			}
			m := quantile(p.fullList, 0.5)
			return cell{vals: []float64{m.Seconds()}, text: fmt.Sprintf("%s (%s instances)", dur(m), count(p.fullCount))}
		}},
		{"scheduling throughput: one workload applied → its last binding stored (the control plane's Scheduled events)", func(p *pointResult) cell {
			switch {
			case p.burstErr != "":
				return cell{note: p.burstErr}
			case p.storedErr != "":
				return cell{note: p.storedErr}
			}
			rate := float64(p.burst) / p.storedTook.Seconds()
			return cell{vals: []float64{rate}, text: fmt.Sprintf("%s placements/s (%s in %s)", count(int(rate)), count(p.burst), dur(p.storedTook))}
		}},
		{"scheduling throughput: one workload applied → its last instance seen bound by a client (a Watch of its instances)", func(p *pointResult) cell {
			if p.burstErr != "" {
				return cell{note: p.burstErr}
			}
			rate := float64(p.burst) / p.burstTook.Seconds()
			return cell{vals: []float64{rate}, text: fmt.Sprintf("%s placements/s (%s in %s)", count(int(rate)), count(p.burst), dur(p.burstTook))}
		}},
		{fmt.Sprintf("node loss: kill -9 of a node holding %d instances → all replaced and Running elsewhere", r.set.loss), func(p *pointResult) cell {
			if p.healErr != "" {
				return cell{note: p.healErr}
			}
			return cell{vals: []float64{p.heal.Seconds()}, text: dur(p.heal)}
		}},
		{"member RSS (VmRSS, no forced GC)", func(p *pointResult) cell {
			if p.rssErr != "" {
				return cell{note: p.rssErr}
			}
			return cell{vals: []float64{float64(p.rss)}, text: mib(p.rss)}
		}},
		{"member RSS per instance, beyond the empty server's", func(p *pointResult) cell {
			if p.rssErr != "" || p.instances == 0 {
				return cell{note: "—"}
			}
			per := float64(p.rss-r.rssEmpty) / float64(p.instances)
			return cell{vals: []float64{per}, text: fmt.Sprintf("%.1f KiB", per/1024)}
		}},
		{"member RSS per instance, beyond the member with every node Ready", func(p *pointResult) cell {
			if p.rssErr != "" || p.instances <= r.atNodes {
				return cell{note: "—"}
			}
			per := float64(p.rss-r.rssNodes) / float64(p.instances-r.atNodes)
			return cell{vals: []float64{per}, text: fmt.Sprintf("%.1f KiB", per/1024)}
		}},
		{"etcd database file", func(p *pointResult) cell {
			if p.dbErr != "" {
				return cell{note: p.dbErr}
			}
			return cell{vals: []float64{float64(p.db)}, text: mib(p.db)}
		}},
		{"time spent on the point (populating and measuring)", func(p *pointResult) cell {
			return cell{vals: []float64{p.took.Seconds()}, text: dur(p.took)}
		}},
	}
}

// report prints the table in Markdown, each figure with its ratio to the
// first point's.
func (r *scaleRun) report(w io.Writer) {
	fmt.Fprintf(w, "\n### Scale benchmark, %s\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "Machine: %s. %s hollow nodes (%d instance slots each) in one `wasmorch simulate`, and %d one-node simulators for node loss; populated with `testdata/ticker.wasm` workloads of %s replicas. Empty server: %s RSS; with every node Ready (and %s instances): %s.\n\n",
		machine(), count(r.set.nodes), r.set.slotsPerNode(), len(r.victims), count(r.set.workloadSize), mib(r.rssEmpty), count(r.atNodes), mib(r.rssNodes))

	header := []string{"scale point (instances)"}
	sep := []string{"---"}
	for _, p := range r.results {
		header = append(header, count(p.point))
		sep = append(sep, "---")
	}
	fmt.Fprintf(w, "| %s |\n| %s |\n", strings.Join(header, " | "), strings.Join(sep, " | "))
	var base *pointResult
	if len(r.results) > 0 && r.results[0].notReason == "" {
		base = r.results[0]
	}
	for i, rw := range r.rows() {
		line := []string{rw.what}
		for _, p := range r.results {
			if p.notReason != "" && p.instances == 0 && i > 0 {
				line = append(line, "—") // not attempted
				continue
			}
			c := rw.at(p)
			if c.note != "" {
				line = append(line, c.note)
				continue
			}
			text := c.text
			if base != nil && p != base {
				text += ratio(c, rw.at(base))
			}
			line = append(line, text)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(line, " | "))
	}
	fmt.Fprintf(w, "\nRatios (×) are against the %s-instance point of the same run.\n", count(r.set.points[0]))
}

// ratio is " (×a / ×b)": c's values over base's.
func ratio(c, base cell) string {
	if len(c.vals) == 0 || len(c.vals) != len(base.vals) {
		return ""
	}
	parts := make([]string, len(c.vals))
	for i, v := range c.vals {
		if base.vals[i] == 0 {
			return ""
		}
		parts[i] = fmt.Sprintf("×%.1f", v/base.vals[i])
	}
	return " (" + strings.Join(parts, " / ") + ")"
}

// percentiles is the p50 / p99 cell of a sample, with a note if the
// sample ended early.
func percentiles(ds []time.Duration, errNote string) cell {
	if len(ds) == 0 {
		if errNote == "" {
			errNote = "no sample"
		}
		return cell{note: errNote}
	}
	p50, p99 := quantile(ds, 0.5), quantile(ds, 0.99)
	c := cell{vals: []float64{p50.Seconds(), p99.Seconds()}, text: dur(p50) + " / " + dur(p99)}
	if errNote != "" {
		c.text += fmt.Sprintf(" (%d samples; then %s)", len(ds), errNote)
	}
	return c
}

// quantile is the nearest-rank q-quantile of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func dur(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// count writes n with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// short is an API error as the table shows it: its code and message.
func short(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// machine describes this machine: CPUs, their model, memory, Go.
func machine() string {
	model, mem := "", ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(rest), &kb)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%d CPUs (%s)%s, %s %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
