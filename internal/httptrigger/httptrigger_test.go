package httptrigger

import (
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		trig    *v1.HttpTrigger
		wantErr string
	}{
		{name: "none", trig: nil},
		{name: "simple", trig: &v1.HttpTrigger{Route: "/greet"}},
		{name: "root", trig: &v1.HttpTrigger{Route: "/"}},
		{name: "nested with host", trig: &v1.HttpTrigger{Route: "/api/v2/", Host: "fn.example.com", TimeoutMs: 5000, MaxBodyBytes: 1024, Concurrency: 4, Queue: 2}},
		{name: "empty", trig: &v1.HttpTrigger{}, wantErr: "route is empty"},
		{name: "relative", trig: &v1.HttpTrigger{Route: "greet"}, wantErr: "not a path prefix"},
		{name: "query", trig: &v1.HttpTrigger{Route: "/greet?x=1"}, wantErr: "not a path prefix"},
		{name: "space", trig: &v1.HttpTrigger{Route: "/a b"}, wantErr: "not a path prefix"},
		{name: "empty segment", trig: &v1.HttpTrigger{Route: "/a//b"}, wantErr: "empty segment"},
		{name: "dot dot", trig: &v1.HttpTrigger{Route: "/a/../b"}, wantErr: `".." segment`},
		{name: "host with port", trig: &v1.HttpTrigger{Route: "/a", Host: "fn.example:80"}, wantErr: "not a lowercase DNS name"},
		{name: "negative timeout", trig: &v1.HttpTrigger{Route: "/a", TimeoutMs: -1}, wantErr: "timeout"},
		{name: "huge body", trig: &v1.HttpTrigger{Route: "/a", MaxBodyBytes: 2 << 30}, wantErr: "body limit"},
		{name: "negative concurrency", trig: &v1.HttpTrigger{Route: "/a", Concurrency: -1}, wantErr: "concurrency"},
		{name: "health path", trig: &v1.HttpTrigger{Route: "/a", HealthPath: "/healthz", HealthIntervalMs: 500}},
		{name: "relative health path", trig: &v1.HttpTrigger{Route: "/a", HealthPath: "healthz"}, wantErr: "not a path"},
		{name: "health path dot dot", trig: &v1.HttpTrigger{Route: "/a", HealthPath: "/../b"}, wantErr: `".." segment`},
		{name: "health interval alone", trig: &v1.HttpTrigger{Route: "/a", HealthIntervalMs: 500}, wantErr: "needs a health path"},
		{name: "health interval too short", trig: &v1.HttpTrigger{Route: "/a", HealthPath: "/h", HealthIntervalMs: 10}, wantErr: "outside 100ms..10m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.trig)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want an invalid-argument error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMatchesAndSplit(t *testing.T) {
	tests := []struct {
		route, path  string
		match        bool
		script, info string
	}{
		{"/greet", "/greet", true, "/greet", ""},
		{"/greet", "/greet/", true, "/greet", "/"},
		{"/greet", "/greet/a/b", true, "/greet", "/a/b"},
		{"/greet", "/greeting", false, "", ""},
		{"/greet", "/", false, "", ""},
		{"/", "/anything", true, "", "/anything"},
		{"/", "/", true, "", "/"},
	}
	for _, tt := range tests {
		if got := Matches(tt.route, tt.path); got != tt.match {
			t.Errorf("Matches(%q, %q) = %v", tt.route, tt.path, got)
			continue
		}
		if tt.match {
			if s, i := Split(tt.route, tt.path); s != tt.script || i != tt.info {
				t.Errorf("Split(%q, %q) = %q, %q; want %q, %q", tt.route, tt.path, s, i, tt.script, tt.info)
			}
		}
	}
}

func TestEffectiveDefaultsAndSameRoute(t *testing.T) {
	s := Effective(&v1.HttpTrigger{Route: "/greet/", Host: "FN.example"})
	if s.Route != "/greet" || s.Host != "fn.example" || s.Timeout != DefaultTimeout || s.MaxBody != DefaultMaxBody ||
		s.Concurrency != DefaultConcurrency || s.Queue != DefaultQueue {
		t.Errorf("Effective = %+v", s)
	}
	if s := Effective(&v1.HttpTrigger{Route: "/a", TimeoutMs: 1500}); s.Timeout != 1500*time.Millisecond {
		t.Errorf("timeout = %s", s.Timeout)
	}
	a := &v1.HttpTrigger{Route: "/greet/"}
	if !SameRoute(a, &v1.HttpTrigger{Route: "/greet"}) {
		t.Error("/greet/ and /greet are the same route")
	}
	if SameRoute(a, &v1.HttpTrigger{Route: "/greet", Host: "fn.example"}) {
		t.Error("a route for one host is not the route for any host")
	}
	if SameRoute(a, nil) || SameRoute(a, &v1.HttpTrigger{Route: "/greet/x"}) {
		t.Error("different routes reported the same")
	}
}

func TestHealthSettings(t *testing.T) {
	for _, tt := range []struct {
		route, health, want string
	}{{"/greet", "/healthz", "/greet/healthz"}, {"/greet/", "/h", "/greet/h"}, {"/", "/healthz", "/healthz"}, {"/a", "/", "/a/"}} {
		if got := HealthPath(tt.route, tt.health); got != tt.want {
			t.Errorf("HealthPath(%q, %q) = %q, want %q", tt.route, tt.health, got, tt.want)
		}
	}
	s := Effective(&v1.HttpTrigger{Route: "/greet", HealthPath: "/healthz"})
	if s.HealthPath != "/greet/healthz" || s.HealthInterval != DefaultHealthInterval {
		t.Errorf("Effective: health %q every %s, want /greet/healthz every %s", s.HealthPath, s.HealthInterval, DefaultHealthInterval)
	}
	if s := Effective(&v1.HttpTrigger{Route: "/greet"}); s.HealthPath != "" || s.HealthInterval != 0 {
		t.Errorf("Effective without a health path: %q every %s", s.HealthPath, s.HealthInterval)
	}
}
