;; oom.wasm: grows its memory 1 MiB (16 pages) at a time towards 1 GiB.
;; When memory.grow fails it prints "memory.grow failed" to stdout and exits
;; 4, which shows the instance's memory limit is enforced; if it ever gets to
;; 1 GiB it prints "memory grew to 1 GiB" and exits 0.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; iovecs at 0 (failure) and 8 (success); nwritten at 16.
  (data (i32.const 0) "\20\00\00\00\13\00\00\00")
  (data (i32.const 8) "\40\00\00\00\15\00\00\00")
  (data (i32.const 32) "memory.grow failed\n")
  (data (i32.const 64) "memory grew to 1 GiB\n")

  (func (export "_start")
    (loop $grow
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
        (then
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
          (call $proc_exit (i32.const 4))))
      (br_if $grow (i32.lt_u (memory.size) (i32.const 16384))))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16))))
)
