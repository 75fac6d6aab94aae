#!/usr/bin/env bash
# Installs the Standard Webhooks reference library for Python (PyPI `standardwebhooks`), which
# the test receiver tests/webhooks/receiver.py verifies every delivery with.
#
# Usage: tests/webhooks/install.sh   (the webhook tests call it when the module is missing)
# Idempotent: pip runs only when the module cannot be imported.
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c "import standardwebhooks" 2>/dev/null; then
    echo "webhooks/install.sh: standardwebhooks already present"
    exit 0
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    if [ "$(readlink -f "$(command -v "$PY")")" = "$(readlink -f /usr/bin/python3)" ]; then
        SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    else
        "$PY" -m ensurepip -q
    fi
fi
echo "webhooks/install.sh: pip install standardwebhooks"
# Debian's system python marks itself externally managed (PEP 668); allow installing anyway.
"$PY" -m pip install -q standardwebhooks 2>/dev/null \
    || "$PY" -m pip install -q --break-system-packages standardwebhooks
"$PY" -c "import standardwebhooks" || { echo "webhooks/install.sh: standardwebhooks still missing"; exit 1; }
echo "webhooks/install.sh: done"
