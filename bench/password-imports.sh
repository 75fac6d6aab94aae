#!/usr/bin/env bash
# Memory of `roster serve` over imports that set passwords (audit s22 H2): N uploads over SFTP
# of a 1,200-row file whose passwords all change, then idle. Prints VmHWM/VmRSS after each.
# Before model::argon's pool: 2.6, 5.0 and 5.9 GB after three imports, kept while idle.
# Usage: bench/password-imports.sh [N] [ROSTER_BINARY]   (default 3, target/release/roster)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-3}"
BIN="$(realpath "${2:-target/release/roster}")"
[ -x "$BIN" ] || cargo build --release >/dev/null
W="$(mktemp -d /tmp/roster-pwbench.XXXXXX)"
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$W"' EXIT
ssh-keygen -q -t ed25519 -N "" -f "$W/key"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SFTP_PORT=$(port); ADMIN_PORT=$(port)
cat >"$W/roster.toml" <<TOML
[server]
listen = "127.0.0.1:$SFTP_PORT"
host_keys = "$W/host_keys"
data_dir = "$W/data"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[[tenants]]
id = "demo"
authorized_keys = ["$(cat "$W/key.pub")"]

[tenants.import]
file = "users.csv"
match_by = "email"

[tenants.import.columns]
email = "E-mail"
first_name = "First Name"
last_name = "Last Name"
password = "Password"
TOML
python3 - "$W" <<'PY'
import sys
for n in range(3):
    with open(f"{sys.argv[1]}/u{n}.csv", "w") as f:
        f.write("E-mail,First Name,Last Name,Password\n")
        for i in range(1200):
            f.write(f"user{i}@x.example,First{i},Last{i},pw-{n}-{i}-secret\n")
PY
mkdir -p "$W/host_keys"
"$BIN" -c "$W/roster.toml" serve >"$W/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do grep -q "SFTP listening\|listening" "$W/serve.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
rss() { awk '/VmRSS|VmHWM/ {printf "%s %s MB  ", $1, int($2/1024)}' "/proc/$PID/status"; echo; }
echo "start:          $(rss)"
for n in $(seq 0 $((N - 1))); do
    printf 'put %s/u%d.csv users.csv\n' "$W" $((n % 3)) >"$W/batch"
    sftp -q -b "$W/batch" -i "$W/key" -P "$SFTP_PORT" -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null demo@127.0.0.1 >/dev/null
    for _ in $(seq 1 600); do
        [ "$(grep -c 'run finished' "$W/serve.log")" -gt "$n" ] && break
        sleep 0.2
    done
    echo "after import $n: $(rss)"
done
sleep 5
echo "idle:           $(rss)"
