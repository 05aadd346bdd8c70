#!/bin/bash
# Install the Debian packages the tests need, only those that are missing.
# Idempotent and quiet: does nothing (not even `apt-get update`) when all are present.
# Packages installed here must not start services: a policy-rc.d denies that
# for the duration of the install (etcd-server is only used by the store benchmark,
# docker-registry is started by scripts/test-registry.sh on its own port).
set -euo pipefail

die() { echo "install-test-deps: ERROR: $*" >&2; exit 1; }

PKGS=(nftables iproute2 busybox-static containernetworking-plugins docker-registry skopeo umoci etcd-server curl unzip python3-venv libseccomp-dev pkg-config)

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

missing=()
for p in "${PKGS[@]}"; do
    is_installed "$p" || missing+=("$p")
done
# pip: only if no pip is usable at all (pyenv or Debian's).
if ! python3 -m pip --version >/dev/null 2>&1 && ! command -v pip3 >/dev/null 2>&1; then
    is_installed python3-pip || missing+=(python3-pip)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-deps: all present"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
command -v apt-get >/dev/null || die "apt-get not found (Debian required); missing: ${missing[*]}"

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Keep maintainer scripts from starting daemons (etcd, registry) during install.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

log=$(mktemp /tmp/install-test-deps.XXXXXX.log)
if ! apt-get update -qq >"$log" 2>&1; then
    cat "$log" >&2
    die "apt-get update failed (log above)"
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "apt-get install failed for: ${missing[*]} (log tail above, full log: $log)"
fi
rm -f "$log"

for p in "${missing[@]}"; do
    is_installed "$p" || die "package $p still not installed after apt-get install"
done
for c in nft ip busybox docker-registry skopeo umoci etcd curl unzip; do
    command -v "$c" >/dev/null || die "command $c not found after install"
done
echo "install-test-deps: done"
