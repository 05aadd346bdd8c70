#!/bin/bash
# Build the test image busybox:latest from Debian's busybox-static and push it to the
# local test registry (scripts/test-registry.sh start must have run).
#
# rootfs: /bin/busybox + a symlink per applet (busybox --list-full), minimal
# /etc/passwd, /etc/group, /tmp (1777); packed with umoci into the OCI layout
# $CACHE/images/busybox, cmd ["sh"], then `skopeo copy` to
# 127.0.0.1:$PORT/busybox:latest. Skips all when the registry already has the tag
# (KUBE_TEST_REBUILD_IMAGES=1 forces a rebuild and push).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBE_TEST_CACHE:-$REPO/.cache}
PORT=${KUBE_TEST_REGISTRY_PORT:-5000}
REGISTRY=127.0.0.1:$PORT
LAYOUT=$CACHE/images/busybox
OCI_ACCEPT='application/vnd.oci.image.manifest.v1+json'

die() { echo "build-test-images: ERROR: $*" >&2; exit 1; }

has_tag() {
    curl -sf -o /dev/null --max-time 5 -H "Accept: $OCI_ACCEPT" \
        "http://$REGISTRY/v2/busybox/manifests/latest"
}

for c in curl umoci skopeo python3; do
    command -v "$c" >/dev/null || die "$c not found (run scripts/install-test-deps.sh)"
done
curl -sf -o /dev/null --max-time 5 "http://$REGISTRY/v2/" ||
    die "no registry answers on http://$REGISTRY/v2/ (run scripts/test-registry.sh start)"

if [ "${KUBE_TEST_REBUILD_IMAGES:-0}" != 1 ] && has_tag; then
    echo "build-test-images: $REGISTRY/busybox:latest already present"
    exit 0
fi

BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (install busybox-static: scripts/install-test-deps.sh)"
if [ "$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null || true)" != installed ]; then
    die "busybox-static is not installed; $BUSYBOX may be dynamically linked (run scripts/install-test-deps.sh)"
fi

mkdir -p "$CACHE/images"
WORK=$(mktemp -d "$CACHE/images/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BUNDLE=$WORK/bundle
ROOTLESS=()
[ "$(id -u)" -eq 0 ] || ROOTLESS=(--rootless)

run() {  # run a command quietly, show its output only when it fails
    local out
    if ! out=$("$@" 2>&1); then
        echo "$out" >&2
        die "failed: $*"
    fi
}

# Fresh OCI layout with an empty image, unpacked into a bundle to fill its rootfs.
rm -rf "$LAYOUT"
run umoci init --layout "$LAYOUT"
run umoci new --image "$LAYOUT:latest"
run umoci unpack "${ROOTLESS[@]}" --image "$LAYOUT:latest" "$BUNDLE"
ROOTFS=$BUNDLE/rootfs

mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,var,proc,sys,dev,tmp}
chmod 1777 "$ROOTFS/tmp"
chmod 0700 "$ROOTFS/root"
install -m 0755 "$BUSYBOX" "$ROOTFS/bin/busybox"
n=0
while IFS= read -r applet; do
    [ -n "$applet" ] || continue
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$ROOTFS/$(dirname "$applet")"
    ln -sfn /bin/busybox "$ROOTFS/$applet"
    n=$((n + 1))
done < <("$BUSYBOX" --list-full)
[ "$n" -gt 100 ] || die "busybox --list-full gave only $n applets"
[ -L "$ROOTFS/bin/sh" ] || die "no /bin/sh applet in busybox"

cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group"

run umoci repack --image "$LAYOUT:latest" "$BUNDLE"
run umoci config --image "$LAYOUT:latest" \
    --config.cmd=sh \
    --config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir=/ \
    --architecture=amd64 --os=linux \
    --author="kube test infrastructure" \
    --config.label=org.opencontainers.image.title=busybox \
    --config.label="org.opencontainers.image.version=$("$BUSYBOX" | head -n1 | awk '{print $2}')"
run umoci gc --layout "$LAYOUT"

echo "build-test-images: pushing $REGISTRY/busybox:latest ($n applets)"
run skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
    "oci:$LAYOUT:latest" "docker://$REGISTRY/busybox:latest"

# Verify: pull the manifest back and check its config.
headers=$WORK/manifest.headers
manifest=$(curl -sf --max-time 5 -D "$headers" -H "Accept: $OCI_ACCEPT" \
    "http://$REGISTRY/v2/busybox/manifests/latest") ||
    die "registry does not return the busybox:latest manifest after push"
grep -qi "^content-type: $OCI_ACCEPT" "$headers" ||
    die "manifest served with $(grep -i '^content-type:' "$headers"), expected $OCI_ACCEPT"
config_digest=$(printf '%s' "$manifest" | python3 -c '
import json, sys
m = json.load(sys.stdin)
assert m.get("mediaType", "application/vnd.oci.image.manifest.v1+json") == "application/vnd.oci.image.manifest.v1+json", m["mediaType"]
assert len(m["layers"]) >= 1, "no layers"
print(m["config"]["digest"])') || die "unexpected manifest: $manifest"
curl -sf --max-time 5 "http://$REGISTRY/v2/busybox/blobs/$config_digest" | python3 -c '
import json, sys
c = json.load(sys.stdin)
assert c["architecture"] == "amd64" and c["os"] == "linux", (c["architecture"], c["os"])
assert c["config"]["Cmd"] == ["sh"], c["config"].get("Cmd")' ||
    die "image config of busybox:latest is not as built"
echo "build-test-images: $REGISTRY/busybox:latest ok (config $config_digest)"
