// Command tourapp is the container of the README's tour, built by
// `make tour-images` as a static Linux binary and packed into an OCI image
// archive (bin/app-oci.tar). With $PORT set (an HTTP container, `deploy
// --port`) it answers every path with a greeting; without, it is a
// service that says it is up and then that it still is, every 5 s. It
// exits 0 on SIGTERM, as the worker's stop asks.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	host, _ := os.Hostname()
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}

	port := os.Getenv("PORT")
	if port == "" {
		fmt.Printf("tourapp: up on %s, args [%s]\n", host, strings.Join(os.Args[1:], " "))
		tick := time.NewTicker(5 * time.Second)
		for {
			select {
			case <-tick.C:
				fmt.Println("tourapp: still up")
			case <-stop:
				fmt.Println("tourapp: stopping")
				return
			}
		}
	}

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("tourapp: %s %s\n", r.Method, r.URL.Path)
		fmt.Fprintf(w, "%s from a container (%s): %s %s\n", greeting, host, r.Method, r.URL.Path)
	})
	srv := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-stop
		_ = srv.Close()
	}()
	fmt.Println("tourapp: listening on port " + port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "tourapp:", err)
		os.Exit(1)
	}
}
