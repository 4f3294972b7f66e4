#!/usr/bin/env bash
# Build Portico and run it on manifests/examples with echo backends answering for every
# pod the examples name, then print curl commands to try. Ctrl-C stops everything.
#
#   ./run-example.sh          run until Ctrl-C
#   ./run-example.sh --check  run the printed requests once, report, and exit
set -euo pipefail
cd "$(dirname "$0")"

HTTP_ADDR=127.0.0.1:8080
HTTPS_ADDR=127.0.0.1:8443
ADMIN_ADDR=127.0.0.1:10254
EXAMPLES=manifests/examples
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# The logs live in a temporary folder that is removed on exit, however the script ends
# (a failure below prints the log's tail first).
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/portico-example.XXXXXX")
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> building ingress-controller and echo-server (first build takes a few minutes)"
cargo build -p ingress-controller -p conformance --bins

# The pods of the examples' EndpointSlices and Endpoints (127.0.0.x:8080), plus the
# ExternalName Service's target (localhost:8090).
"$TARGET_DIR/debug/echo-server" --manifests "$EXAMPLES" \
  127.0.0.1:8090=default/someapi/someapi-external >"$LOG_DIR/echo.log" 2>&1 &
pids+=($!)

"$TARGET_DIR/debug/ingress-controller" --manifests "$EXAMPLES" \
  --http-addr "$HTTP_ADDR" --https-addr "$HTTPS_ADDR" --admin-addr "$ADMIN_ADDR" \
  >"$LOG_DIR/portico.log" 2>&1 &
portico=$!
pids+=("$portico")

echo "==> waiting for Portico to be ready (http://$ADMIN_ADDR/readyz)"
for _ in $(seq 1 300); do
  if ! kill -0 "$portico" 2>/dev/null; then
    echo "Portico exited; its log ($LOG_DIR/portico.log):" >&2
    tail -n 30 "$LOG_DIR/portico.log" >&2
    exit 1
  fi
  if curl -fsS -o /dev/null "http://$ADMIN_ADDR/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.2
done
if [ "${ready:-0}" != 1 ]; then
  echo "Portico did not become ready; its log ($LOG_DIR/portico.log):" >&2
  tail -n 30 "$LOG_DIR/portico.log" >&2
  exit 1
fi

requests=(
  "curl -H 'Host: kubia.example.com' http://$HTTP_ADDR/"
  "curl --resolve kubia.example.com:8443:127.0.0.1 -k https://kubia.example.com:8443/"
  "curl -H 'Host: foo.example.com' http://$HTTP_ADDR/foo"
  "curl -H 'Host: foo.example.com' http://$HTTP_ADDR/kubia"
  "curl -H 'Host: bar.example.com' http://$HTTP_ADDR/"
  "curl -i -H 'Host: sticky.example.com' http://$HTTP_ADDR/"
  "curl -H 'Host: external.example.com' http://$HTTP_ADDR/"
  "curl -H 'Host: api.example.com' http://$HTTP_ADDR/"
)

if [ "${1:-}" = "--check" ]; then
  failed=0
  for r in "${requests[@]}"; do
    if out=$(eval "$r -fsS" 2>&1); then
      pod=$(printf '%s' "$out" | sed -n 's/.*"pod": "\([^"]*\)".*/\1/p' | head -n 1)
      echo "ok    $r  ->  pod $pod"
    else
      echo "FAIL  $r  ->  $out"
      failed=1
    fi
  done
  exit "$failed"
fi

cat <<MSG

Portico is serving manifests/examples on http://$HTTP_ADDR and https://$HTTPS_ADDR
(metrics: http://$ADMIN_ADDR/metrics; logs in $LOG_DIR, removed on exit). Try:

MSG
for r in "${requests[@]}"; do echo "  $r"; done
cat <<MSG

Each answer is JSON from the echo pod that served it (namespace, service, pod, and the
request it received). Edit a file in $EXAMPLES and Portico reloads it. Ctrl-C to stop.
MSG
wait "$portico"
