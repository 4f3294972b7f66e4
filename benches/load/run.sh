#!/usr/bin/env bash
# Portico against nginx and HAProxy, side by side in one run (see benches/RESULTS.md).
#
#   benches/load/run.sh [bench.py flags]
#     --variants http,https,h2,body16k,churn   which runs (default: all)
#     --rounds 3 --duration 10                  interleaved rounds, seconds per run
#     --churn-rate 10 --churn-duration 30       config changes per second under load
#     --json FILE                               raw per-round figures
#
# Installs nginx, HAProxy, wrk and h2load from Debian's packages when missing, builds
# Portico in release mode as the image does (profile-guided, benches/pgo.sh; PGO=0 for a
# plain `cargo build --release`), writes equivalent configs for all three (100 virtual hosts,
# 4 prefixes each, keep-alive upstreams, no access logs, one worker each), pins each proxy
# to CPU 0 and the backend (nginx serving a fixed body) and load generator to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Debian packages start system-wide services on :80; the benchmark uses its own ports.

if [ "${PGO:-1}" = 0 ]; then
  echo "==> building ingress-controller (release)"
  cargo build --release -p ingress-controller --bin ingress-controller
else
  echo "==> building ingress-controller (release, profile-guided)"
  benches/pgo.sh
fi
TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "==> machine: $(nproc) CPUs; $(nginx -v 2>&1); $(haproxy -v | head -n 1); $(wrk -v 2>&1 | head -n 1); $("$TARGET_DIR/release/ingress-controller" --version)"
exec python3 benches/load/bench.py --portico "$TARGET_DIR/release/ingress-controller" "$@"
