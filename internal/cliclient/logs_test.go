package cliclient

import (
	"strings"
	"testing"
)

func TestLogWriterPrefixesWholeLinesWithTheirInstance(t *testing.T) {
	var out strings.Builder
	l := newLogWriter(&out, true)
	for _, c := range []struct{ id, data string }{
		{"a", "one\ntw"},
		{"b", "first\n"},
		{"a", "o\nthree"},
		{"b", "no newline"},
	} {
		if err := l.write(c.id, []byte(c.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	want := "[a] one\n[b] first\n[a] two\n[a] three\n[b] no newline\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestLogWriterWithOneInstanceWritesBytesAsTheyCame(t *testing.T) {
	var out strings.Builder
	l := newLogWriter(&out, false)
	_ = l.write("a", []byte("partial"))
	_ = l.write("a", []byte(" line\n"))
	_ = l.flush()
	if out.String() != "partial line\n" {
		t.Errorf("got %q", out.String())
	}
}
