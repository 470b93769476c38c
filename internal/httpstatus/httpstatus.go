// Package httpstatus records the status an HTTP handler answered with, for
// the metrics and logs of the two places that serve function requests: the
// gateway and a worker's local listener (agent --local-http).
package httpstatus

import "net/http"

// Recorder is an http.ResponseWriter that remembers the first status
// written (200 for a body or a flush before any header). It keeps the
// writer's Flush, which streamed answers go through, and reaches the
// server's writer through Unwrap (http.ResponseController).
type Recorder struct {
	http.ResponseWriter
	code int
}

// New wraps w.
func New(w http.ResponseWriter) *Recorder { return &Recorder{ResponseWriter: w} }

// Status is the status written, or 0 if nothing was (the client went).
func (r *Recorder) Status() int { return r.code }

func (r *Recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *Recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Flush implements http.Flusher: a flush before any header sends 200.
func (r *Recorder) Flush() {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
