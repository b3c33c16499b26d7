#!/usr/bin/env bash
# Installs, idempotently, everything stasis and its tests need on Debian 12:
# runc, conmon, catatonit, busybox-static, netavark, aardvark-dns, podman (the
# reference engine for interchange tests), docker-registry (a real registry for
# pull tests) and CRIU >= 4.2, built from Debian's source tarball when the
# installed criu is older or fails `criu check`.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }

PKGS=(
  runc conmon catatonit busybox-static netavark aardvark-dns iptables iproute2
  podman docker-registry skopeo zstd uidmap ca-certificates xz-utils
  # CRIU build dependencies
  build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev
  libgnutls28-dev uuid-dev libaio-dev dpkg-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

criu_ok() {
  local v
  command -v criu >/dev/null 2>&1 || return 1
  v=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
  [[ -n "$v" ]] || return 1
  # require >= 4.2
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  ((major > 4 || (major == 4 && minor >= 2))) || return 1
  criu check >/dev/null 2>&1
}

if ! criu_ok; then
  log "building CRIU >= 4.2 from Debian's source tarball"
  src=/etc/apt/sources.list.d/stasis-sid-src.sources
  if [[ ! -f $src ]]; then
    cat >"$src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
  fi
  work=$(mktemp -d /var/tmp/stasis-criu.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get source --download-only criu >/dev/null 2>&1 || true)
  tarball=$(ls "$work"/criu_*.orig.tar.* 2>/dev/null | head -n1)
  [[ -n "$tarball" ]] || { log "could not download criu's source tarball"; exit 1; }
  tar -C "$work" -xf "$tarball"
  dir=$(find "$work" -maxdepth 1 -type d -name 'criu-*' | head -n1)
  make -C "$dir" -j"$(nproc)" criu >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log"; exit 1; }
  install -D -m 0755 "$dir/criu/criu" /usr/local/sbin/criu
  hash -r
  criu_ok || { log "built criu fails 'criu check'"; criu check || true; exit 1; }
  log "installed $(criu --version | head -n1)"
fi

# Podman here needs these settings (hard RLIMIT_NOFILE is below its default).
if [[ ! -f /etc/containers/containers.conf ]] || ! grep -q 'stasis-setup' /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<'CONF'
# written by stasis-setup (scripts/install-deps.sh)
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
fi
log "ok: $(criu --version | head -n1), $(runc --version | head -n1), conmon $(conmon --version | head -n1)"
