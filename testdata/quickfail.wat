;; quickfail.wasm: crashes soon after it starts, as a service that fails in
;; its start-up (a missing setting, a port taken) does: prints
;; "quickfail: started" on stdout, sleeps 300 ms with poll_oneoff on a
;; relative monotonic clock, prints "quickfail: exiting with code 2" on
;; stderr and calls proc_exit(2). The runtime reports it running before it
;; fails: what deploy's wait must not take for ready.
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
  ;;   88..95   iovec {128, 19}: "quickfail: started\n"
  ;;   96..103  iovec {160, 30}: "quickfail: exiting with code 2\n"
  (data (i32.const 16) "\01")                              ;; CLOCK_MONOTONIC
  (data (i32.const 24) "\00\a3\e1\11\00\00\00\00")         ;; 300,000,000 ns
  (data (i32.const 88) "\80\00\00\00\13\00\00\00")
  (data (i32.const 96) "\a0\00\00\00\1f\00\00\00")
  (data (i32.const 128) "quickfail: started\n")
  (data (i32.const 160) "quickfail: exiting with code 2\n")

  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 88) (i32.const 1) (i32.const 84)))
    (drop (call $poll_oneoff (i32.const 0) (i32.const 48) (i32.const 1) (i32.const 80)))
    (drop (call $fd_write (i32.const 2) (i32.const 96) (i32.const 1) (i32.const 84)))
    (call $proc_exit (i32.const 2)))
)
