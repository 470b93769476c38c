;; sleep.wasm: an idle long-running instance, as small as a module can be
;; (one 64 KiB page, no libc). Prints "sleeping" once, then sleeps an hour
;; at a time with poll_oneoff on a relative monotonic clock, forever: what
;; an instance waiting for work costs a node.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1 1)

  ;; Memory layout:
  ;;   0..47    subscription: userdata (0), tag 0 = clock (8), clock id (16),
  ;;            timeout in ns (24), precision (32), flags 0 = relative (40)
  ;;   48..79   the event poll_oneoff writes back
  ;;   80..83   nevents result
  ;;   84..87   nwritten result
  ;;   88..95   iovec {buf, len}
  ;;   100..108 "sleeping\n"
  (data (i32.const 16) "\01")                              ;; CLOCK_MONOTONIC
  (data (i32.const 24) "\00\a0\b8\30\46\03\00\00")         ;; 3,600,000,000,000 ns
  (data (i32.const 88) "\64\00\00\00\09\00\00\00")         ;; {100, 9}
  (data (i32.const 100) "sleeping\n")

  (func $start (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 88) (i32.const 1) (i32.const 84)))
    (loop $forever
      ;; A failing sleep would turn this into a busy loop, so give up.
      (if (call $poll_oneoff (i32.const 0) (i32.const 48) (i32.const 1) (i32.const 80))
        (then (call $proc_exit (i32.const 1))))
      (br $forever)))
)
