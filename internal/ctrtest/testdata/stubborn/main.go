// stubborn is a container that takes its whole stop grace: it prints
// "stubborn: running", then, on SIGTERM, "stubborn: got SIGTERM" and goes
// on running until it is killed. The tests of what happens while
// instances stop run it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Println("stubborn: running")
	for range term {
		fmt.Println("stubborn: got SIGTERM")
	}
}
