package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Steady HTTP load through a cluster's gateway, for rollouts: a few
// clients call one path back to back and count what they get. The loop is
// bounded in count (loadMaxRequests per client) and in time (loadMaxTime),
// whichever comes first, and talks only to the gateway's loopback address.
const (
	loadMaxRequests = 200_000
	loadMaxTime     = 5 * time.Minute
)

// load is a running steady load.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	ok       int
	answers  map[string]int // bodies of 200 answers, by first line
	failures map[string]int // everything else: "503 ...", transport errors
	first    []string       // the first few failures, in order
}

// startLoad starts clients that call http://<gateway>path until stop:
// every other one POSTs a small body (which the gateway can replay to
// another replica, as it can a GET), the others GET.
func (c *cluster) startLoad(path string, clients int) *load {
	ctx, cancel := context.WithTimeout(context.Background(), loadMaxTime)
	l := &load{cancel: cancel, answers: map[string]int{}, failures: map[string]int{}}
	transport := &http.Transport{MaxIdleConnsPerHost: clients, Proxy: nil}
	client := &http.Client{Transport: transport, Timeout: requestLimit}
	url := "http://" + c.http + path
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := range loadMaxRequests {
				if ctx.Err() != nil {
					return
				}
				body := ""
				if i%2 == 1 {
					body = fmt.Sprintf("request %d of client %d", n, i)
				}
				l.record(ctx, client, url, body)
			}
		}()
	}
	return l
}

// record sends one request and counts its answer; a request cut short by
// stop is not counted.
func (l *load) record(ctx context.Context, client *http.Client, url, body string) {
	method, payload := http.MethodGet, io.Reader(nil)
	if body != "" {
		method, payload = http.MethodPost, strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, payload)
	if err != nil {
		panic(err)
	}
	resp, err := client.Do(req)
	var answer []byte
	if err == nil {
		answer, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var failure string
	switch {
	case err != nil:
		failure = err.Error()
	case resp.StatusCode != http.StatusOK:
		failure = fmt.Sprintf("%s %d %s", method, resp.StatusCode, firstLine(string(answer)))
	default:
		l.ok++
		l.answers[firstLine(string(answer))]++
		return
	}
	l.failures[failure]++
	if len(l.first) < 5 {
		l.first = append(l.first, failure)
	}
}

// snapshot is what the load has seen so far.
type loadStats struct {
	OK       int
	Failed   int
	Answers  map[string]int
	Failures map[string]int
	First    []string
}

func (l *load) stats() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := loadStats{OK: l.ok, Answers: map[string]int{}, Failures: map[string]int{}, First: append([]string(nil), l.first...)}
	for k, v := range l.answers {
		s.Answers[k] = v
	}
	for k, v := range l.failures {
		s.Failures[k] = v
		s.Failed += v
	}
	return s
}

// stop ends the load and returns what it saw.
func (l *load) stop() loadStats {
	l.cancel()
	l.wg.Wait()
	return l.stats()
}

func (s loadStats) String() string {
	return fmt.Sprintf("%d ok, %d failed %v (first: %q), answers %v", s.OK, s.Failed, s.Failures, s.First, s.Answers)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
