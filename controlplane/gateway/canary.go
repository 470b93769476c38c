package gateway

import "math/rand/v2"

// splitCanary sorts a route's replicas into the pools of a canary: those
// of the workload's generation (the canary) and those of older ones. Out
// of a canary phase, or while one pool is empty, there is nothing to
// split and every replica is picked alike.
func (r *route) splitCanary() {
	r.canaryPercent, r.fresh, r.older = r.canary, nil, nil
	if r.canaryPercent <= 0 {
		return
	}
	for _, rep := range r.replicas {
		if rep.generation == r.generation {
			r.fresh = append(r.fresh, rep)
		} else {
			r.older = append(r.older, rep)
		}
	}
	if len(r.fresh) == 0 || len(r.older) == 0 {
		r.canaryPercent, r.fresh, r.older = 0, nil, nil
	}
}

// canaryPool is where a request goes during a canary: the canary's pool
// with probability canaryPercent/100, else the older one; a pool whose
// replicas were all tried (skip) gives way to the other.
func (r *route) canaryPool(skip map[*replica]bool) []*replica {
	fresh, older := untried(r.fresh, skip), untried(r.older, skip)
	switch {
	case len(fresh) == 0:
		return older
	case len(older) == 0:
		return fresh
	case rand.IntN(100) < r.canaryPercent:
		return fresh
	}
	return older
}
