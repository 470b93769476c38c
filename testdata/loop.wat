;; loop.wasm: _start spins forever without calling any import, so only the
;; runtime's context-done termination checks can stop it.
(module
  (memory (export "memory") 1 1)
  (func (export "_start")
    (loop $forever (br $forever)))
)
