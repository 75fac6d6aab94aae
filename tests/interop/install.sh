#!/usr/bin/env bash
# Installs the real SFTP clients (and OpenSSH's sshd, used as a reference peer)
# that tests/interop/run.sh and bench/ drive.
#
# Usage (as root, on Debian 12):   tests/interop/install.sh
#
# Idempotent: apt-get update/install run only when a package is missing,
# pip only when a Python module is missing. Safe to run on every CI run.
set -euo pipefail

APT_PKGS=(openssh-client openssh-server lftp putty-tools curl rclone iproute2)  # iproute2: vanished_client.sh
PY_MODS=(paramiko asyncssh argon2)       # import names
PIP_PKGS=(paramiko asyncssh argon2-cffi) # matching PyPI names

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install.sh: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # openssh-server's postinst may try to start sshd; it is harmless in containers.
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "install.sh: apt packages already present"
fi

PY="${PYTHON:-python3}"                  # run.sh uses the same $PYTHON (default python3)
need_pip=()
for i in "${!PY_MODS[@]}"; do
    if ! "$PY" -c "import ${PY_MODS[$i]}" 2>/dev/null; then
        need_pip+=("${PIP_PKGS[$i]}")
    fi
done
if [ "${#need_pip[@]}" -gt 0 ]; then
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        # Debian's python3 ships without pip; a self-built python has ensurepip.
        if [ "$(readlink -f "$(command -v "$PY")")" = "$(readlink -f /usr/bin/python3)" ]; then
            echo "install.sh: apt-get install python3-pip"
            export DEBIAN_FRONTEND=noninteractive
            $SUDO apt-get update -qq
            $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
        else
            "$PY" -m ensurepip -q
        fi
    fi
    echo "install.sh: pip install ${need_pip[*]}"
    # Debian's system python marks itself externally managed (PEP 668); allow installing anyway.
    "$PY" -m pip install -q "${need_pip[@]}" 2>/dev/null \
        || "$PY" -m pip install -q --break-system-packages "${need_pip[@]}"
    for m in "${PY_MODS[@]}"; do "$PY" -c "import $m" || { echo "install.sh: $m still missing"; exit 1; }; done
else
    echo "install.sh: python modules already present"
fi

# sshd refuses to start without its privilege-separation directory.
$SUDO mkdir -p /run/sshd
echo "install.sh: done"
