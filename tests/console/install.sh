#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver (/usr/bin/chromium, /usr/bin/chromedriver) that the
# web console's browser tests drive headless (tests/support/browser.rs starts chromedriver on a
# free port; the tests speak WebDriver to it with fantoccini).
#
# Usage (as root, or with sudo, on Debian 12):   tests/console/install.sh
#
# Idempotent: apt-get runs only when chromium or chromedriver is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install.sh: chromium and chromedriver already present"
    exit 0
fi
echo "install.sh: apt-get install chromium chromium-driver"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromedriver >/dev/null 2>&1 || { echo "install.sh: chromedriver still missing" >&2; exit 1; }
