// Command goserver is an HTTP server in Go (GOOS=wasip1) on the listener
// the host preopens, a Wasm service (deploy goserver.wasm --port 8080
// --route /go): net/http on net.FileListener of $LISTEN_FD (3 by
// default). It answers "hello from go: METHOD PATH" and the body's length;
// GET .../healthz answers "ok". Go waits on its sockets in poll_oneoff.
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	fd := 3
	if s := os.Getenv("LISTEN_FD"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			fd = n
		}
	}
	// Non-blocking, so that Go's scheduler waits for connections in
	// poll_oneoff while other goroutines run (as under wazero and wasmtime).
	if err := syscall.SetNonblock(fd, true); err != nil {
		log.Fatalf("goserver: fd %d: %v", fd, err)
	}
	l, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
	if err != nil {
		log.Fatalf("goserver: listener on fd %d: %v", fd, err)
	}
	fmt.Printf("goserver: accepting on fd %d (port %s)\n", fd, os.Getenv("PORT"))
	log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/healthz") {
			fmt.Fprintln(w, "ok")
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "hello from go: %s %s (%d bytes)\n", r.Method, r.URL.Path, n)
	})))
}
