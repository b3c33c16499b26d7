#!/usr/bin/env bash
# Runs every test of stasis on a fresh Debian 12 machine, as root. Installs what it needs first
# (idempotent): apt packages, CRIU >= 4.2, the test image. A missing dependency fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on PATH.
command -v cargo >/dev/null 2>&1 || export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
[[ $(id -u) -eq 0 ]] || { echo "scripts/test.sh must run as root (containers, CRIU)" >&2; exit 1; }
bash scripts/install-deps.sh
bash scripts/make-test-image.sh
export STASIS_TEST_IMAGES=${STASIS_TEST_IMAGES:-/var/tmp/stasis-test-images}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests run real runc, CRIU, conmon and netavark; a test binary's own tests share
# nothing but the host, yet CRIU dumps are CPU-heavy on 2 cores: keep the parallelism modest.
log=$(mktemp /var/tmp/stasis-test.XXXXXX)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace -- --test-threads="${STASIS_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1);
       if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
