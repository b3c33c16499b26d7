#!/usr/bin/env bash
# Builds the test image, once: a busybox-static root filesystem imported into Podman as
# localhost/stasis-test/busybox:latest, then saved as docker-archive and oci-archive so both
# engines load the very same bytes (same config blob, same image ID).
# Output directory: $STASIS_TEST_IMAGES (default /var/tmp/stasis-test-images):
#   rootfs.tar  busybox-docker.tar  busybox-oci.tar  image-id
set -euo pipefail
out=${STASIS_TEST_IMAGES:-/var/tmp/stasis-test-images}
ref=localhost/stasis-test/busybox:latest
if [[ -s $out/busybox-docker.tar && -s $out/busybox-oci.tar && -s $out/image-id ]] &&
  podman image exists "$ref" 2>/dev/null; then
  exit 0
fi
mkdir -p "$out"
work=$(mktemp -d /var/tmp/stasis-img.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,run,var/www,home}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
echo 'hello from the image' >"$root/etc/motd"
echo '<h1>stasis</h1>' >"$root/var/www/index.html"
# Fixed timestamps so the tarball (and so the image) is reproducible.
find "$root" -exec touch -h -d '2024-01-01 00:00:00' {} +
tar --sort=name --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out/rootfs.tar" .
podman rmi -f "$ref" >/dev/null 2>&1 || true
podman import -q --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
  "$out/rootfs.tar" "$ref" >/dev/null
rm -f "$out/busybox-docker.tar" "$out/busybox-oci.tar"
podman save -q --format docker-archive -o "$out/busybox-docker.tar" "$ref" >/dev/null
podman save -q --format oci-archive -o "$out/busybox-oci.tar" "$ref" >/dev/null
podman images --no-trunc --format '{{.ID}}' "$ref" | sed 's/^sha256://' >"$out/image-id"
echo "test image $ref: $(cat "$out/image-id")" >&2
