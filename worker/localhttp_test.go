package worker

import (
	"slices"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func fnRec(id, route, host string) *pb.Instance {
	r := rec(id, 0)
	r.Spec.Http = &pb.HttpTrigger{Route: route, Host: host}
	return r
}

// TestLocalRoutesMatchAsTheGatewayDoes: a route for the request's host
// before a route for any host, the longest prefix first; the replicas of
// a route take turns; a route goes with its last replica; commands have
// no route.
func TestLocalRoutesMatchAsTheGatewayDoes(t *testing.T) {
	var lr localRoutes
	lr.add(fnRec("any-1", "/api", ""))
	lr.add(fnRec("any-2", "/api/", ""))
	lr.add(fnRec("long", "/api/v2", ""))
	lr.add(fnRec("hosted", "/api", "site.example"))
	lr.add(rec("command", 0))

	for _, c := range []struct{ host, path, route string }{
		{"127.0.0.1:8080", "/api/x", "/api"},
		{"127.0.0.1:8080", "/api", "/api"},
		{"127.0.0.1:8080", "/api/v2/y", "/api/v2"},
		{"SITE.example:8080", "/api/v2/y", "/api"},
		{"127.0.0.1:8080", "/apix", ""},
		{"127.0.0.1:8080", "/", ""},
	} {
		set, ids, ok := lr.match(c.host, c.path)
		if ok != (c.route != "") || ok && set.Route != c.route {
			t.Errorf("%s%s matched %q (%v, %v), want %q", c.host, c.path, set.Route, ids, ok, c.route)
		}
	}
	_, first, _ := lr.match("", "/api")
	_, second, _ := lr.match("", "/api")
	if !slices.Equal(slices.Sorted(slices.Values(first)), []string{"any-1", "any-2"}) || first[0] == second[0] {
		t.Fatalf("the replicas of /api in two requests: %v then %v, want both, taking turns", first, second)
	}

	lr.remove(fnRec("any-1", "/api", ""))
	if _, ids, _ := lr.match("", "/api"); !slices.Equal(ids, []string{"any-2"}) {
		t.Fatalf("/api after one replica left: %v", ids)
	}
	lr.remove(fnRec("any-2", "/api", ""))
	if set, ids, ok := lr.match("", "/api/x"); ok {
		t.Fatalf("/api/x matched %s %v after the route's last replica left", set.Route, ids)
	}
}
