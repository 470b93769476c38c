package gateway

import (
	"net/http"
	"testing"
	"time"
)

// TestAnswersCountedByGeneration: what each generation's replicas answer
// is counted for rollouts, a function's 5xx as a failure but not a replica
// too busy to take the request, and a generation that answers nothing for
// generationTTL is no longer reported.
func TestAnswersCountedByGeneration(t *testing.T) {
	for _, tt := range []struct {
		status    int
		saturated bool
		failed    bool
	}{{200, false, false}, {404, false, false}, {500, false, true}, {502, false, true}, {504, false, true}, {503, false, true}, {503, true, false}} {
		if got := failedAnswer(tt.status, tt.saturated); got != tt.failed {
			t.Errorf("failedAnswer(%d, saturated %v) = %v, want %v", tt.status, tt.saturated, got, tt.failed)
		}
	}

	now := time.Unix(1_700_000_000, 0)
	var l load
	l.answered(1, false, now)
	l.answered(2, failedAnswer(http.StatusInternalServerError, false), now)
	l.answered(2, false, now.Add(time.Minute))
	l.mu.Lock()
	gens := l.generationsLocked(now.Add(time.Minute))
	l.mu.Unlock()
	if len(gens) != 2 || gens[1].GetRequests() != 1 || gens[1].GetErrors() != 0 || gens[2].GetRequests() != 2 || gens[2].GetErrors() != 1 {
		t.Fatalf("generations = %v, want 1: 1 request, 2: 2 requests 1 error", gens)
	}
	l.mu.Lock()
	gens = l.generationsLocked(now.Add(time.Minute + generationTTL - time.Second))
	l.mu.Unlock()
	if len(gens) != 1 || gens[2] == nil {
		t.Fatalf("after generation 1 went quiet for %s: %v, want only generation 2", generationTTL, gens)
	}
}
