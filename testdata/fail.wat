;; fail.wasm: prints one line to stderr and exits with code 3 via proc_exit.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1 1)

  ;; iovec {buf = 16, len = 26} at 0; nwritten at 8.
  (data (i32.const 0) "\10\00\00\00\1a\00\00\00")
  (data (i32.const 16) "fail: exiting with code 3\n")

  (func (export "_start")
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 3)))
)
