;; badcgi.wasm: an HTTP function whose output is not CGI: a line with no
;; "Name: value" header and no blank line. The gateway answers 502.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  ;; iovec at 0: buf 16, len 22; bytes written at 8
  (data (i32.const 0) "\10\00\00\00\16\00\00\00")
  (data (i32.const 16) "this is not CGI output")
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)
