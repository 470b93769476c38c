// Command prog is the program the runtime conformance suite runs under
// every runtime: built for wasip1 it is a Wasm module, built for linux and
// packed into an image it is a container. argv[1] says what to do.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

var sink int

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: prog exit N | echo ARG... | spin | tick | sleep | alloc MiB | cat [+]PATH...")
		os.Exit(64)
	}
	switch os.Args[1] {
	case "exit":
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Println("out:hello")
		fmt.Fprintln(os.Stderr, "err:hello")
		os.Exit(code)
	case "echo":
		for _, a := range os.Args[2:] {
			fmt.Println("arg:" + a)
		}
		fmt.Println("env:" + os.Getenv("CONFORMANCE_GREETING"))
	case "spin":
		fmt.Println("spinning")
		for i := 0; ; i++ {
			sink += i
		}
	case "tick":
		for i := 0; ; i++ {
			fmt.Println("tick", i)
			time.Sleep(50 * time.Millisecond)
		}
	case "sleep":
		fmt.Println("sleeping")
		for {
			time.Sleep(time.Hour)
		}
	case "alloc":
		mib, _ := strconv.Atoi(os.Args[2])
		var keep [][]byte
		for range mib {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
	case "cat":
		// Each PATH as "PATH: <content>" or "PATH: cannot open"; +PATH
		// tries to write PATH: "PATH: written" or "PATH: cannot write".
		for _, p := range os.Args[2:] {
			if w, ok := strings.CutPrefix(p, "+"); ok {
				if err := os.WriteFile(w, []byte("overwritten"), 0o644); err != nil {
					fmt.Println(w + ": cannot write")
				} else {
					fmt.Println(w + ": written")
				}
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				fmt.Println(p + ": cannot open")
				continue
			}
			fmt.Println(p + ": " + string(b))
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(64)
	}
}
