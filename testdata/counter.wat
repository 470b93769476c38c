;; counter.wasm: an HTTP function that counts its calls in linear memory
;; and answers the count. A fresh instance per request always answers 1;
;; an instance reused between requests, or a memory reused without being
;; cleared, would answer 2, 3, ...
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  ;; iovec at 0: buf 64, len 28 (26 bytes of headers, the digit, a newline)
  (data (i32.const 0) "\40\00\00\00\1c\00\00\00")
  (data (i32.const 64) "Content-Type: text/plain\n\n0\n")
  (func (export "_start")
    ;; the count lives at 4096, outside every data segment (which each
    ;; instantiation writes afresh): only a zeroed memory starts it at 0.
    ;; The digit at 64+26 shows it: '0' + n.
    (i32.store8 (i32.const 4096) (i32.add (i32.load8_u (i32.const 4096)) (i32.const 1)))
    (i32.store8 (i32.const 90) (i32.add (i32.const 48) (i32.load8_u (i32.const 4096))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)
