#!/usr/bin/env bash
# Installs PostgreSQL's server binaries (initdb, pg_ctl, postgres) that the PostgreSQL store
# tests use to start their own throwaway cluster (tests/support/postgres.rs). No cluster is
# created or started here, and Debian's own cluster (if the package creates one) is not used.
#
# Usage (as root, on Debian 12):   tests/postgres/install.sh
#
# Idempotent: apt-get runs only when initdb/pg_ctl cannot be found on PATH or under
# /usr/lib/postgresql/<major>/bin (where Debian puts them). Safe to run on every CI run.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_server() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            return 0
        fi
    done
    return 1
}

if have_server; then
    echo "install.sh: PostgreSQL server binaries already present"
else
    echo "install.sh: apt-get install postgresql"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # The package's postinst may create and start a "main" cluster; the tests never use it.
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
have_server || { echo "install.sh: initdb/pg_ctl still not found after installing postgresql" >&2; exit 1; }
