#!/usr/bin/env bash
# Installs nginx (Debian) and scim2-server (PyPI, by Yaal Coop: an in-memory SCIM 2.0 service provider that Roster's
# developers did not write) into a virtualenv, the push target of tests/scim_push*.rs and
# bench/scim_push.sh. Prints the path of the `scim2-server` program on its last line.
#
# Usage: tests/scim_push/install.sh        (ROSTER_SCIM_VENV overrides the venv folder)
# Idempotent: pip runs only when the program is missing. Safe to run on every CI run.
set -euo pipefail

VENV="${ROSTER_SCIM_VENV:-${TMPDIR:-/tmp}/roster-scim2-venv}"
PY="${PYTHON:-python3}"
VERSION="0.8.3"

if [ ! -x "$VENV/bin/scim2-server" ]; then
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 needs python3-venv for venvs.
        SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q "scim2-server==$VERSION" >&2
fi
# nginx: a real rate limiter (limit_req answering 429 with Retry-After) in front of it.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
"$VENV/bin/scim2-server" --help >/dev/null
echo "$VENV/bin/scim2-server"
