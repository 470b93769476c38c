;; burst.wasm: writes 2 MiB to stdout as fast as it can (lines of 63 'x'
;; and a newline, 64 KiB per fd_write), then exits 0: many replicas show
;; that a node's instance logs together stay within its budget. Exits 1 if a
;; write fails or writes nothing.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  ;; Page 0: iovec at 0, nwritten at 8. Page 1: the 64 KiB buffer.
  (memory (export "memory") 2 2)
  (data (i32.const 0) "\00\00\01\00\00\00\01\00") ;; {buf = 65536, len = 65536}

  (func (export "_start")
    (local $i i32)
    (local $left i64)
    (loop $fill
      (i32.store8 offset=65536 (local.get $i)
        (select (i32.const 10) (i32.const 120)
          (i32.eq (i32.and (local.get $i) (i32.const 63)) (i32.const 63))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 65536))))

    (local.set $left (i64.const 2097152)) ;; 2 MiB
    (loop $write
      (if (i32.or
            (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
            (i32.eqz (i32.load (i32.const 8))))
        (then (call $proc_exit (i32.const 1))))
      (local.set $left (i64.sub (local.get $left) (i64.extend_i32_u (i32.load (i32.const 8)))))
      (br_if $write (i64.gt_s (local.get $left) (i64.const 0)))))
)
