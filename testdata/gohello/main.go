//go:build wasip1

// Command gohello is the Go (GOOS=wasip1) counterpart of hello.wasm: a ~2 MB
// module used to measure compile and compile-cache costs of real toolchains.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Println("hello from go")
	if len(os.Args) > 1 {
		fmt.Println("args:", strings.Join(os.Args[1:], " "))
	}
}
