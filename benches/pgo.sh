#!/usr/bin/env bash
# Builds the release binary with profile-guided optimisation, as the image does.
#
# An instrumented build serves each suite of the load bench once (plain keep-alive,
# HTTPS, HTTP/2, 16 KiB bodies; `benches/load/bench.py`), and the release build is then
# laid out by what that run did: hot paths inlined and kept together, cold ones apart.
# The result lands where `cargo build --release` puts it:
#
#     benches/pgo.sh            # target/release/ingress-controller ($CARGO_TARGET_DIR's)
#
# Needs what the bench needs (python3, nginx for the backend, wrk, h2load, openssl,
# taskset) and rustup's llvm-tools component for llvm-profdata (added when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in python3 nginx wrk h2load openssl taskset; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "benches/pgo.sh: missing ${missing[*]} (the training run needs them)" >&2
  exit 1
fi

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools >/dev/null
fi
if [ ! -x "$profdata" ]; then
  echo "benches/pgo.sh: no llvm-profdata at $profdata (rustup component add llvm-tools)" >&2
  exit 1
fi

target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
target=$(cd "$target" && pwd)
# A fixed place for the raw profiles keeps the instrumented build's flags the same from
# one run to the next, so cargo can reuse it.
raw="$target/pgo-generate/profiles"
rm -rf "$raw"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The backend's nginx workers serve files from under it.
chmod 755 "$work"
build=(cargo build --release --locked -p ingress-controller --bin ingress-controller)

RUSTFLAGS="-Cprofile-generate=$raw" "${build[@]}" --target-dir "$target/pgo-generate"
# The build's own scripts and macros are instrumented too and leave profiles there: the
# proxy's run alone is the profile.
rm -rf "$raw"

# The proxy on the first CPU this may use, the load on the last (the same one when
# there is only one).
read -r proxy_cpu load_cpu < <(python3 -c \
  'import os; c = sorted(os.sched_getaffinity(0)); print(c[0], c[-1])')
python3 benches/load/bench.py --portico "$target/pgo-generate/release/ingress-controller" \
  --proxies portico --variants http,https,h2,body16k --rounds 1 --duration 5 --warmup 1 \
  --proxy-cpu "$proxy_cpu" --load-cpu "$load_cpu" --work "$work/bench" >/dev/null

merged="$target/pgo-generate/merged.profdata"
"$profdata" merge -o "$merged" "$raw"
# Named by its content: cargo does not watch the file, but a changed flag rebuilds.
named="$target/pgo-generate/$(sha256sum "$merged" | cut -c1-16).profdata"
mv "$merged" "$named"
RUSTFLAGS="-Cprofile-use=$named" "${build[@]}"
echo "built $target/release/ingress-controller, laid out by the training run's profile"
