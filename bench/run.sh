#!/usr/bin/env bash
# The checkpoint/restore benchmark, one command, as root: stasis against Podman 4.3 on the same
# runc, CRIU and image. See BENCHMARKS.md.
#
#   bench/run.sh            tiny, 256M and 1G workloads, 3 runs each, both engines
#   bench/run.sh --quick    tiny and 256M, 1 run (development)
#
# Environment: BENCH_SIZES="tiny 256M 1G" BENCH_RUNS=3 BENCH_ENGINES="stasis podman"
#   BENCH_COLD_SLEEP=5 (seconds idle before a cold operation) BENCH_COMPRESS= (-c value; empty:
#   each engine's default, zstd) BENCH_PRINT_STATS=1 (pass --print-stats, keep the JSON)
#   BENCH_STASIS_BIN=path (skip the cargo build and use this binary) CARGO_TARGET_DIR.
# Raw numbers: bench/results/DATE.jsonl; the table: bench/results/DATE.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

if [[ $(id -u) -ne 0 ]]; then
  echo "bench/run.sh must run as root (containers, CRIU, drop_caches)" >&2
  exit 1
fi

bash "$repo/scripts/install-deps.sh"
bash "$repo/scripts/make-test-image.sh"
command -v gcc >/dev/null || { echo "bench: gcc missing (install-deps installs build-essential)" >&2; exit 1; }

engines=${BENCH_ENGINES:-stasis podman}
if [[ " $engines " == *" stasis "* && -z ${BENCH_STASIS_BIN:-} ]]; then
  command -v cargo >/dev/null || { echo "bench: cargo (Rust toolchain) is needed to build stasis" >&2; exit 1; }
  echo "bench: cargo build --release -p stasis" >&2
  (cd "$repo" && cargo build --release -p stasis)
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export BENCH_STASIS_BIN=$target_dir/release/stasis
fi

exec python3 "$here/bench.py" "$@"
