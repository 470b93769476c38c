;; stream.wasm: an HTTP function that writes its CGI headers and a first
;; line, then waits 50 ms (poll_oneoff on a relative clock) and writes a
;; second line: shows that output reaches the client as it is written.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  ;; iovec of the head at 0 (buf 64, len 32), of the tail at 16 (buf 128, len 7)
  (data (i32.const 0) "\40\00\00\00\20\00\00\00")
  (data (i32.const 16) "\80\00\00\00\07\00\00\00")
  (data (i32.const 64) "Content-Type: text/plain\n\nfirst\n")
  (data (i32.const 128) "second\n")
  ;; subscription at 256: userdata 0, clock tag 0, relative 50 ms, monotonic clock, precision 0
  (data (i32.const 272) "\01")
  (data (i32.const 280) "\80\f0\fa\02\00\00\00\00")
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8))))
)
