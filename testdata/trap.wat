;; trap.wasm: _start executes `unreachable`, the simplest trap.
(module
  (memory (export "memory") 1 1)
  (func (export "_start")
    unreachable)
)
