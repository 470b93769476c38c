;; badimport.wasm: imports env.does_not_exist, which no wasm runtime of
;; wasmorch provides, and calls it.
(module
  (import "env" "does_not_exist" (func $does_not_exist))
  (memory (export "memory") 1 1)
  (func (export "_start")
    (call $does_not_exist))
)
