;; ticker.wasm: a long-running instance as small as a module can be (one
;; 64 KiB page of memory, no libc). Prints "tick 1", "tick 2", ... to stdout,
;; one line every 100 ms, forever. It sleeps with poll_oneoff on a relative
;; monotonic clock subscription, the way wasi-libc implements nanosleep.
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
  ;;   100..127 the line: "tick " then the decimal digits, right-aligned
  ;;   128      '\n'
  (data (i32.const 16) "\01")                              ;; CLOCK_MONOTONIC
  (data (i32.const 24) "\00\e1\f5\05\00\00\00\00")         ;; 100,000,000 ns
  (data (i32.const 128) "\n")

  (func $start (export "_start")
    (local $n i64)
    (local $v i64)
    (local $p i32)
    (loop $forever
      (local.set $n (i64.add (local.get $n) (i64.const 1)))

      ;; Write the digits of n backwards, ending just before the newline.
      (local.set $v (local.get $n))
      (local.set $p (i32.const 128))
      (loop $digits
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i32.store8 (local.get $p)
          (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
        (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
        (br_if $digits (i64.ne (local.get $v) (i64.const 0))))

      ;; "tick " in front of the digits.
      (local.set $p (i32.sub (local.get $p) (i32.const 5)))
      (i32.store (local.get $p) (i32.const 0x6b636974)) ;; "tick"
      (i32.store8 offset=4 (local.get $p) (i32.const 32))

      (i32.store (i32.const 88) (local.get $p))
      (i32.store (i32.const 92) (i32.sub (i32.const 129) (local.get $p)))
      (drop (call $fd_write (i32.const 1) (i32.const 88) (i32.const 1) (i32.const 84)))

      ;; Sleep; a failing sleep would turn this into a busy loop, so give up.
      (if (call $poll_oneoff (i32.const 0) (i32.const 48) (i32.const 1) (i32.const 80))
        (then (call $proc_exit (i32.const 1))))
      (br $forever)))
)
