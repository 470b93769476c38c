#!/usr/bin/env bash
# make run: start the all-in-one (`wasmorch up`), deploy a sample module once
# it answers, print what to try next, and stay in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=bin/wasmorch
DATA_DIR=${WASMORCH_DATA_DIR:-.wasmorch}
API=${WASMORCH_API:-127.0.0.1:7070}
HTTP=${WASMORCH_HTTP:-127.0.0.1:8080}
METRICS=${WASMORCH_METRICS:-127.0.0.1:7072}

"$BIN" up --data-dir "$DATA_DIR" --api "$API" --http "$HTTP" --metrics-addr "$METRICS" &
UP=$!
# Ctrl-C reaches `up` too (it is in the same process group): wait for its
# clean shutdown and exit with its status, 0 when it stopped cleanly.
trap 'kill -TERM $UP 2>/dev/null; wait $UP; exit $?' INT TERM

for _ in $(seq 1 300); do
  if "$BIN" get nodes --server "$API" -o json 2>/dev/null | grep -q '"Ready"'; then break; fi
  if ! kill -0 $UP 2>/dev/null; then echo "wasmorch up exited; see the messages above" >&2; exit 1; fi
  sleep 0.1
done

"$BIN" deploy testdata/ticker.wasm --name ticker --replicas 2 --server "$API"
"$BIN" deploy testdata/greet.wasm --name greet --route /greet --replicas 2 --health-path /healthz --env GREETING=hello --server "$API"

# The hints name the server only when it is not the CLI's default.
S=""
if [ "$API" != "127.0.0.1:7070" ]; then S=" --server $API"; fi

cat <<MSG

wasmorch is running (data in $DATA_DIR, API on $API, gateway on $HTTP, metrics on $METRICS).
In another terminal, try:

  curl 'http://$HTTP/greet?who=you'      # an HTTP function: a fresh Wasm sandbox per request
  $BIN get workloads$S
  $BIN get instances -o json$S
  $BIN logs ticker$S
  $BIN deploy testdata/hello.wasm --name hello --replicas 3 --restart never$S
  $BIN scale ticker --replicas 5$S
  $BIN deploy testdata/greet.wasm --name greet --route /greet --replicas 2 --health-path /healthz --env GREETING=hola$S
                                          # a rolling update: no request fails meanwhile
  $BIN rollout history greet$S ; $BIN rollout undo greet$S
  $BIN deploy bin/app-oci.tar --name web --port 8080 --route /web$S
                                          # a container (when containerd runs): curl http://$HTTP/web
  $BIN delete ticker$S

Press Ctrl-C to stop; 'make run' again brings every workload back.
MSG
wait $UP
