// Package httptrigger holds what the gateway and the worker's function
// server agree on about an HTTP function: the effective settings of a
// trigger (defaults filled in), how routes are written and matched, and the
// headers the gateway uses to tell a worker which replica a request is for.
package httptrigger

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Defaults for a trigger's zero fields.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxBody     = 10 << 20
	DefaultConcurrency = 100
	DefaultQueue       = 100

	// MaxTimeout bounds a function's request timeout.
	MaxTimeout = time.Hour
	// MaxBodyLimit bounds a function's request body limit.
	MaxBodyLimit = 1 << 30
	maxRouteLen  = 1024

	// DefaultHealthInterval is how often a replica's health path is
	// requested when the trigger does not say.
	DefaultHealthInterval = 2 * time.Second
	// MinHealthInterval and MaxHealthInterval bound a health interval.
	MinHealthInterval = 100 * time.Millisecond
	MaxHealthInterval = 10 * time.Minute
	// HealthFailureThreshold is how many failed health checks in a row
	// make a ready replica unhealthy (no traffic), and a new revision's
	// replica that never passed count as failing its rollout.
	HealthFailureThreshold = 3
)

// Headers between the gateway and a worker's function server. The worker
// removes them before the function sees the request.
const (
	// HeaderInstance names the replica (instance id) that should serve.
	HeaderInstance = "X-Wasmorch-Instance"
	// HeaderRoute is the route the request matched: the CGI SCRIPT_NAME.
	HeaderRoute = "X-Wasmorch-Route"
	// HeaderRemoteAddr is the original client's address.
	HeaderRemoteAddr = "X-Wasmorch-Remote-Addr"
	// HeaderUnavailable, on a worker's 503, says why: UnavailableNoReplica
	// (the request never ran: the gateway may try another replica),
	// UnavailableSaturated, or UnavailableStopped (the replica stopped
	// while the request ran, before it answered: it may have had effects,
	// so the gateway tries another replica only with an idempotent
	// request).
	HeaderUnavailable    = "X-Wasmorch-Unavailable"
	UnavailableNoReplica = "no-replica"
	UnavailableSaturated = "saturated"
	UnavailableStopped   = "stopped"
	// HeaderWorkload and HeaderSpec, instead of HeaderInstance, ask the
	// worker to serve a function it holds no replica of (a cold start):
	// the workload's name and generation ("name/generation") and its
	// spec (a v1.WorkloadSpec, protobuf in unpadded base64url).
	HeaderWorkload = "X-Wasmorch-Workload"
	HeaderSpec     = "X-Wasmorch-Spec"
	// HeaderFailure, on a worker's answer, says that no function answered:
	// the call failed (a trap, a timeout, output that is not CGI, a body
	// over the limit, a saturated replica ...). It holds the outcome and
	// the detail (FormatFailure), which the gateway logs and records as an
	// event and never passes to the client. The worker drops it, as every
	// X-Wasmorch-* header, from what a function answers.
	HeaderFailure = "X-Wasmorch-Failure"
)

// maxFailureDetail bounds the detail a failure header carries.
const maxFailureDetail = 1 << 10

// FormatFailure is HeaderFailure's value: "Outcome: detail", the detail
// on one line of printable characters.
func FormatFailure(outcome, detail string) string {
	detail = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, detail)
	if len(detail) > maxFailureDetail {
		detail = strings.ToValidUTF8(detail[:maxFailureDetail], "") + "..."
	}
	return outcome + ": " + detail
}

// ParseFailure splits HeaderFailure's value into the outcome and the
// detail.
func ParseFailure(v string) (outcome, detail string) {
	outcome, detail, _ = strings.Cut(v, ": ")
	return outcome, detail
}

// Settings are a trigger's effective settings.
type Settings struct {
	Route       string
	Host        string
	Timeout     time.Duration
	MaxBody     int64
	Concurrency int
	Queue       int
	// HealthPath is the full path the worker requests to check a replica
	// (the route joined with the trigger's health path), "" for none;
	// HealthInterval how often.
	HealthPath     string
	HealthInterval time.Duration
}

// Effective fills in a trigger's defaults.
func Effective(t *v1.HttpTrigger) Settings {
	s := Settings{
		Route:       NormalizeRoute(t.GetRoute()),
		Host:        strings.ToLower(t.GetHost()),
		Timeout:     time.Duration(t.GetTimeoutMs()) * time.Millisecond,
		MaxBody:     t.GetMaxBodyBytes(),
		Concurrency: int(t.GetConcurrency()),
		Queue:       int(t.GetQueue()),
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MaxBody <= 0 {
		s.MaxBody = DefaultMaxBody
	}
	if s.Concurrency <= 0 {
		s.Concurrency = DefaultConcurrency
	}
	if s.Queue <= 0 {
		s.Queue = DefaultQueue
	}
	if h := t.GetHealthPath(); h != "" {
		s.HealthPath = HealthPath(s.Route, h)
		s.HealthInterval = time.Duration(t.GetHealthIntervalMs()) * time.Millisecond
		if s.HealthInterval <= 0 {
			s.HealthInterval = DefaultHealthInterval
		}
	}
	return s
}

// HealthPath joins a route and a health path under it: "/greet" and
// "/healthz" make "/greet/healthz"; under "/" the health path stays.
func HealthPath(route, health string) string {
	route = NormalizeRoute(route)
	if route == "/" {
		return health
	}
	return route + health
}

var (
	routeChars = regexp.MustCompile(`^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$`)
	hostName   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// NormalizeRoute drops a trailing slash: "/greet/" and "/greet" are one
// route. "/" stays "/".
func NormalizeRoute(route string) string {
	if len(route) > 1 {
		return strings.TrimRight(route, "/")
	}
	return route
}

// Validate checks a trigger as a user wrote it; errors are
// errdefs.ErrInvalidArgument and say what to write instead.
func Validate(t *v1.HttpTrigger) error {
	if t == nil {
		return nil
	}
	r := t.GetRoute()
	switch {
	case r == "":
		return errdefs.Invalidf("the HTTP route is empty: give a path prefix such as /greet")
	case len(r) > maxRouteLen:
		return errdefs.Invalidf("the HTTP route is %d bytes long, more than %d", len(r), maxRouteLen)
	case !routeChars.MatchString(r):
		return errdefs.Invalidf("HTTP route %q is not a path prefix: start with '/' and use URL path characters only (no query, fragment or spaces)", r)
	case strings.Contains(r, "//"):
		return errdefs.Invalidf("HTTP route %q has an empty segment ('//')", r)
	}
	for _, seg := range strings.Split(r, "/") {
		if seg == "." || seg == ".." {
			return errdefs.Invalidf("HTTP route %q has a %q segment", r, seg)
		}
	}
	if h := t.GetHost(); h != "" && (len(h) > 253 || !hostName.MatchString(h)) {
		return errdefs.Invalidf("HTTP host %q is not a lowercase DNS name (no port, no scheme)", h)
	}
	if ms := t.GetTimeoutMs(); ms < 0 || time.Duration(ms)*time.Millisecond > MaxTimeout {
		return errdefs.Invalidf("HTTP timeout %dms is outside 0..%s", ms, MaxTimeout)
	}
	if b := t.GetMaxBodyBytes(); b < 0 || b > MaxBodyLimit {
		return errdefs.Invalidf("HTTP body limit %d bytes is outside 0..%d", b, MaxBodyLimit)
	}
	if c := t.GetConcurrency(); c < 0 || c > 100000 {
		return errdefs.Invalidf("HTTP concurrency %d is outside 0..100000", c)
	}
	if q := t.GetQueue(); q < 0 || q > 100000 {
		return errdefs.Invalidf("HTTP queue %d is outside 0..100000", q)
	}
	if h := t.GetHealthPath(); h != "" {
		if len(h) > maxRouteLen || !routeChars.MatchString(h) || strings.Contains(h, "//") {
			return errdefs.Invalidf("health path %q is not a path: start with '/' and use URL path characters only, e.g. /healthz (it is requested under the route)", h)
		}
		for _, seg := range strings.Split(h, "/") {
			if seg == "." || seg == ".." {
				return errdefs.Invalidf("health path %q has a %q segment", h, seg)
			}
		}
	}
	if ms := t.GetHealthIntervalMs(); ms != 0 {
		d := time.Duration(ms) * time.Millisecond
		switch {
		case t.GetHealthPath() == "":
			return errdefs.Invalidf("a health interval needs a health path to request")
		case d < MinHealthInterval || d > MaxHealthInterval:
			return errdefs.Invalidf("health interval %s is outside %s..%s", d, MinHealthInterval, MaxHealthInterval)
		}
	}
	return nil
}

// SameRoute says whether two triggers claim the same requests: the same
// route and the same host (empty meaning any host).
func SameRoute(a, b *v1.HttpTrigger) bool {
	return a != nil && b != nil &&
		NormalizeRoute(a.GetRoute()) == NormalizeRoute(b.GetRoute()) &&
		strings.EqualFold(a.GetHost(), b.GetHost())
}

// Describe is how errors and listings show a trigger: "/greet" or
// "api.example.com/greet".
func Describe(t *v1.HttpTrigger) string {
	if t.GetHost() != "" {
		return fmt.Sprintf("%s%s", strings.ToLower(t.GetHost()), NormalizeRoute(t.GetRoute()))
	}
	return NormalizeRoute(t.GetRoute())
}

// Matches says whether path falls under route: the route itself or a path
// below it ("/greet" matches "/greet" and "/greet/x", not "/greeting").
func Matches(route, path string) bool {
	if route == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == route || strings.HasPrefix(path, route) && path[len(route)] == '/'
}

// Split divides a matched path into the CGI SCRIPT_NAME and PATH_INFO.
func Split(route, path string) (scriptName, pathInfo string) {
	if route == "/" {
		return "", path
	}
	return route, path[len(route):]
}

// ColdLogID is the id under which a worker keeps what cold starts of a
// function (requests served before the node held a replica of it) wrote
// to stderr; `wasmorch logs` asks every node of a function for it. The
// "@" cannot appear in an instance id, so the two never collide.
func ColdLogID(workload string) string { return workload + "@cold" }
