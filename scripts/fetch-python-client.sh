#!/bin/bash
# Installs the official Kubernetes Python client (PyPI `kubernetes`, pinned)
# into a virtualenv in the cache, for the end-to-end tests that drive the API
# server with it. Prints the interpreter path. Idempotent.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBE_TEST_CACHE:-$REPO/.cache}
VENV=$CACHE/pyclient
VERSION=37.0.3

die() { echo "fetch-python-client: ERROR: $*" >&2; exit 1; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$VERSION')" 2>/dev/null; then
    echo "$VENV/bin/python"
    exit 0
fi
python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
"$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes==$VERSION" >&2 ||
    die "pip install kubernetes==$VERSION failed"
"$VENV/bin/python" -c "import kubernetes" || die "the kubernetes module does not import"
echo "$VENV/bin/python"
