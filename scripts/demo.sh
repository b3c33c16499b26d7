#!/usr/bin/env bash
# The demo: run a counter container, checkpoint it into an archive, restore the archive under a
# new name, and show the counter carried on from where it was. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on PATH.
command -v cargo >/dev/null 2>&1 || export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
[[ $(id -u) -eq 0 ]] || { echo "scripts/demo.sh must run as root (containers, CRIU)" >&2; exit 1; }
bash scripts/install-deps.sh
bash scripts/make-test-image.sh
images=${STASIS_TEST_IMAGES:-/var/tmp/stasis-test-images}
echo "== building stasis (release)"
cargo build --release -q -p stasis
bin=${CARGO_TARGET_DIR:-target}/release/stasis
store=(--root /var/lib/stasis-demo --runroot /run/stasis-demo)
s() { "$bin" "${store[@]}" "$@"; }
say() { printf '\n== %s\n' "$*"; }
archive=$(mktemp -d /var/tmp/stasis-demo.XXXXXX)/counter.tar.zst
trap 's rm -fa >/dev/null 2>&1 || true; rm -rf "$(dirname "$archive")"' EXIT
s rm -fa >/dev/null 2>&1 || true

say "stasis image load -i busybox-docker.tar"
s image load -i "$images/busybox-docker.tar"
say "stasis run -d --name counter ... (counts ten times a second into /tmp/count)"
s run -d --name counter localhost/stasis-test/busybox:latest \
  sh -c 'i=0; while true; do echo $i > /tmp/count; i=$((i+1)); sleep 0.1; done'
sleep 2
before=$(s exec counter cat /tmp/count)
echo "counter is at $before"
say "stasis container checkpoint --export counter.tar.zst counter"
s container checkpoint --export "$archive" counter
ls -l "$archive"
s ps -a
say "stasis container restore --import counter.tar.zst --name counter2"
s container restore --import "$archive" --name counter2
sleep 1
after=$(s exec counter2 cat /tmp/count)
echo "counter2 is at $after (it went on from $before)"
s ps -a
if ((after > before)) && ((after < before + 100)); then
  say "the restored container carried on from where it was checkpointed"
else
  echo "unexpected: counter2 at $after, the checkpoint was taken at $before" >&2
  exit 1
fi
