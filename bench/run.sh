#!/usr/bin/env bash
# Hummel benchmarks, Hummel beside its peers on the same data in the same run.
#
#   bench/run.sh smoke|quick|full [--root DIR] [--runs N] [--only limits,1,2,3,4,5,6] [--warm] [--match RE]
#   bench/run.sh many [--files N] [--root DIR] [--runs N] [--only build,sync,noop,change] [--match RE]
#
#   smoke  tiny data set (~14 MB), 1 run, warm cache, no iptables, no idle-wait; < 1 minute
#   quick  ~316 MB / 2,204 files, 3 runs per row, cold cache, wire bytes via iptables (root)
#   full   ~3.2 GB / 22,004 files for (1)-(4) and (6), quick set for (5)
#   many   (7b) many small files: 500,000 x ~8 KB (~3.9 GB), Hummel beside rsync only; results in
#          ROOT/results/many.json, rendered as section (7b) of BENCHMARKS.md (other sections kept).
#          --files N: another count (data set many-N, results many-N.json, ROOT/BENCHMARKS-many-N.md)
#
# Steps: install the peers if missing (Debian packages + cargo b3sum); copy the hummel binary
# (target/release/hummel, built if missing) to ROOT/bin/hummel so a rebuild during the run cannot
# change what is measured; run bench/bench.py; render BENCHMARKS.md at the repository root with
# bench/report.py (smoke writes ROOT/BENCHMARKS-smoke.md instead). ROOT defaults to
# /tmp/hummel-bench (or $HB_ROOT); results JSON in ROOT/results/<mode>.json.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
MODE="${1:-}"; shift || true
case "$MODE" in smoke|quick|full|many) ;; *)
  echo "usage: $0 smoke|quick|full [--root DIR] [--runs N] [--only limits,1,2,3,4,5,6] [--warm] [--match RE]" >&2
  echo "       $0 many [--files N] [--root DIR] [--runs N] [--only build,sync,noop,change] [--warm] [--match RE]" >&2
  exit 2;;
esac
ARGS=()
FILES=500000
while (($#)); do
  case "$1" in
    --root) export HB_ROOT="$2"; shift 2;;
    --root=*) export HB_ROOT="${1#--root=}"; shift;;
    --files) FILES="$2"; ARGS+=("$1" "$2"); shift 2;;
    --files=*) FILES="${1#--files=}"; ARGS+=("$1"); shift;;
    *) ARGS+=("$1"); shift;;
  esac
done
export HB_ROOT="${HB_ROOT:-/tmp/hummel-bench}"

need=()
if [ "$MODE" = many ]; then  # (7b) compares with rsync only
  tools=(rsync iptables /usr/bin/time); pkgs=(rsync iptables time)
else
  tools=(rsync zsync zsyncmake casync aria2c nginx zstd hyperfine iperf3 pigz curl iptables /usr/bin/time)
  pkgs=(rsync zsync casync aria2 nginx-light zstd hyperfine iperf3 pigz curl iptables time)
fi
for b in "${tools[@]}"; do
  command -v "$b" >/dev/null 2>&1 || need+=("$b")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
command -v b3sum >/dev/null 2>&1 || cargo install --quiet b3sum
if [ "$(id -u)" != 0 ] && [ "$MODE" != smoke ]; then
  echo "note: not root -> no drop_caches / iptables counters (warm cache, lo totals only)" >&2
fi

# The binary under test: a private copy, taken now.
BIN="$REPO/target/release/hummel"
if [ ! -x "$BIN" ]; then (cd "$REPO" && cargo build --release); fi
mkdir -p "$HB_ROOT/bin"
cp "$BIN" "$HB_ROOT/bin/hummel.tmp" && mv "$HB_ROOT/bin/hummel.tmp" "$HB_ROOT/bin/hummel"
export HB_HUMMEL="$HB_ROOT/bin/hummel"
echo "hummel: $("$HB_HUMMEL" --version) (copied from target/release)"

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$HERE/bench.py" "$MODE" "${ARGS[@]}"
if [ "$MODE" = smoke ]; then
  python3 "$HERE/report.py" --modes smoke --out "$HB_ROOT/BENCHMARKS-smoke.md"
elif [ "$MODE" = many ] && [ "$FILES" = 500000 ]; then
  python3 "$HERE/report.py" --section many --out "$REPO/BENCHMARKS.md"
elif [ "$MODE" = many ]; then
  python3 "$HERE/report.py" --section "many-$FILES" --out "$HB_ROOT/BENCHMARKS-many-$FILES.md"
else
  python3 "$HERE/report.py" --out "$REPO/BENCHMARKS.md"
fi
