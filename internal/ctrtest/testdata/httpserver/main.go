// httpserver is the HTTP container the container-function tests run: it
// listens on $PORT and answers
//
//	/.../hello   "hello from a container: <method> <path>?<query> port=<PORT> forwarded-for=<X-Forwarded-For>"
//	/.../echo    the request body
//	/.../sleep   nothing until the client goes away
//	/.../file/P  the content of the file /P (404 when it cannot be read):
//	             configs and secrets mounted as files
//
// and prints one log line per request.
package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		log.Fatal("PORT is not set")
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("httpserver: %s %s\n", r.Method, r.URL.Path)
		switch {
		case strings.HasSuffix(r.URL.Path, "/echo"):
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.Copy(w, r.Body)
		case strings.HasSuffix(r.URL.Path, "/sleep"):
			<-r.Context().Done()
		case strings.Contains(r.URL.Path, "/file/"):
			_, p, _ := strings.Cut(r.URL.Path, "/file")
			b, err := os.ReadFile(p)
			if err != nil {
				http.Error(w, p+": cannot open", http.StatusNotFound)
				return
			}
			_, _ = w.Write(b)
		default:
			fmt.Fprintf(w, "hello from a container: %s %s?%s port=%s forwarded-for=%s\n",
				r.Method, r.URL.Path, r.URL.RawQuery, port, r.Header.Get("X-Forwarded-For"))
		}
	})
	fmt.Println("httpserver: listening on port " + port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
