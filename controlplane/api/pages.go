package api

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Lists page (scale): a reply holds at most a page of objects, and a
// continue token when more follow, so that no reply grows with the
// cluster. docs/api.md says how a client pages and watches.
const (
	// DefaultPageSize is the page a list call gets when it asks for none.
	DefaultPageSize = 500
	// MaxPageSize is the largest page a list call may ask for.
	MaxPageSize = 5000
	// maxPageBytes ends a page early when its objects grow past it (big
	// specs): a reply stays well under gRPC's 4 MiB message limit.
	maxPageBytes = 3 << 20
)

// pageToken is what a continue token carries: where the next page
// starts, and what it is a page of, so that a token is not used with other
// filters (its pages would skip or repeat objects).
type pageToken struct {
	Kind   string `json:"k"`
	After  string `json:"a"`
	Filter string `json:"f,omitempty"`
	// Rev is the revision every page of an event list is read at (events
	// are read from etcd, which keeps past revisions).
	Rev int64 `json:"r,omitempty"`
}

func (t pageToken) encode() string {
	b, _ := json.Marshal(t) // strings and an int: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseContinue reads a list call's continue token ("" for the first
// page) and checks that it was made for a list of kind with filter.
func parseContinue(raw, kind, filter string) (pageToken, error) {
	if raw == "" {
		return pageToken{Kind: kind, Filter: filter}, nil
	}
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.After == "" {
		return t, errdefs.Invalidf("the continue token is not one this server made: pass back the previous page's continue unchanged")
	}
	if t.Kind != kind {
		return t, errdefs.Invalidf("the continue token was made for a list of %s, not of %s: pass it back to the call that returned it", t.Kind, kind)
	}
	if t.Filter != filter {
		return t, errdefs.Invalidf("the continue token was made for other filters (%s), not these (%s): ask for every page with the first page's filters", orNone(t.Filter), orNone(filter))
	}
	return t, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// pageLimit is the page size a list call asked for.
func pageLimit(limit int32) (int, error) {
	switch {
	case limit < 0:
		return 0, errdefs.Invalidf("limit %d is negative: ask for 1 to %d objects a page, or 0 for %d", limit, MaxPageSize, DefaultPageSize)
	case limit == 0:
		return DefaultPageSize, nil
	case limit > MaxPageSize:
		return 0, errdefs.Invalidf("limit %d is more than the %d objects a page may hold: ask for at most %d and follow the continue token", limit, MaxPageSize, MaxPageSize)
	}
	return int(limit), nil
}

// fitPage is how many of a page's objects fit in one reply (at least
// one): the first n whose encoded sizes add up to maxPageBytes.
func fitPage[T proto.Message](objs []T) int {
	size := 0
	for i, o := range objs {
		size += proto.Size(o)
		if size > maxPageBytes && i > 0 {
			return i
		}
	}
	return len(objs)
}

// instanceFilter spells an instance list's filters, for its continue
// token; states are deduplicated and sorted in place.
func instanceFilter(workload, node string, states []v1.InstanceState) (string, []v1.InstanceState, error) {
	for _, s := range states {
		if _, known := v1.InstanceState_name[int32(s)]; !known || s == v1.InstanceState_INSTANCE_STATE_UNSPECIFIED {
			return "", nil, errdefs.Invalidf("instance state %d is not one of Pending, Scheduled, Starting, Running, Succeeded, Failed, Lost, Stopped, Terminating", s)
		}
	}
	slices.Sort(states)
	states = slices.Compact(states)
	var parts []string
	if workload != "" {
		parts = append(parts, "workload="+workload)
	}
	if node != "" {
		parts = append(parts, "node="+node)
	}
	if len(states) > 0 {
		names := make([]string, len(states))
		for i, s := range states {
			names[i] = strings.TrimPrefix(s.String(), "INSTANCE_STATE_")
		}
		parts = append(parts, "states="+strings.Join(names, "|"))
	}
	return strings.Join(parts, ","), states, nil
}

// selectorFilter spells a node list's label selector, for its continue
// token.
func selectorFilter(sel map[string]string) string {
	parts := make([]string, 0, len(sel))
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// hasLabels says whether labels carry every one of sel.
func hasLabels(labels, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
