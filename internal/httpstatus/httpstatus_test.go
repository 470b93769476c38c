package httpstatus

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRecorderKeepsTheFirstStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
		want  int
	}{
		{"nothing written", func(http.ResponseWriter) {}, 0},
		{"a header", func(w http.ResponseWriter) { w.WriteHeader(http.StatusTeapot); w.WriteHeader(http.StatusOK) }, http.StatusTeapot},
		{"a body first", func(w http.ResponseWriter) { _, _ = w.Write([]byte("x")); w.WriteHeader(http.StatusBadGateway) }, http.StatusOK},
		{"a flush first", func(w http.ResponseWriter) { w.(http.Flusher).Flush(); w.WriteHeader(http.StatusBadGateway) }, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := New(rec)
			tc.serve(r)
			if got := r.Status(); got != tc.want {
				t.Errorf("Status() = %d, want %d", got, tc.want)
			}
			if tc.name == "a flush first" && !rec.Flushed {
				t.Error("the flush did not reach the wrapped writer")
			}
		})
	}
}

func TestRecorderUnwrapsForResponseController(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := http.NewResponseController(New(rec)).Flush(); err != nil {
		t.Fatal(err)
	}
	if !rec.Flushed {
		t.Error("ResponseController did not reach the wrapped writer")
	}
}
