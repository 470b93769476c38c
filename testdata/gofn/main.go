// Command gofn is an HTTP function in Go (GOOS=wasip1), CGI over WASI:
// it answers "hello from go, <who>!" with who from the query string.
// The Go-wasip1 counterpart of greet.wasm in the function benchmarks.
package main

import (
	"fmt"
	"net/url"
	"os"
)

func main() {
	who := "world"
	if q, err := url.ParseQuery(os.Getenv("QUERY_STRING")); err == nil && q.Get("who") != "" {
		who = q.Get("who")
	}
	fmt.Printf("Content-Type: text/plain; charset=utf-8\n\nhello from go, %s!\n", who)
}
