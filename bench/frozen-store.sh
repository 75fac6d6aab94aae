#!/usr/bin/env bash
# Memory of one `roster serve` on PostgreSQL while the database is frozen and password logins go
# on: a throwaway PostgreSQL cluster (bench/lib.sh), one node with one tenant, then every server
# process of the cluster stopped with SIGSTOP (a paused VM, a stalled disk) for FREEZE_SECS
# (80) while a paramiko client logs in with the tenant's password every half second. Prints the
# node's RSS, threads and descriptors every 10 s, the logins made, and whether a login works
# once PostgreSQL runs again. Figures only; exit 1 if the node died or logins failed.
#
#   cargo build --release && bash bench/frozen-store.sh
#   ROSTER_BENCH_BIN=/path/to/older/roster bash bench/frozen-store.sh   # the same, another build
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BIN=$(realpath "${ROSTER_BENCH_BIN:-target/release/roster}")
FREEZE=${FREEZE_SECS:-80}
work=$(mktemp -d /tmp/roster-frozen.XXXXXX)
chmod 755 "$work"
serve_pid=""
frozen=()
finish() {
    [ ${#frozen[@]} -gt 0 ] && kill -CONT "${frozen[@]}" 2>/dev/null || true
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
    [ -n "${PG_STOP:-}" ] && "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap finish EXIT
pg_throwaway "$work" "-c fsync=off"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE roster"
hash=$(printf 'bench-password' | "$BIN" hash-password 2>/dev/null | tail -1)
sftp_port=$(free_port)
admin_port=$(free_port)
mkdir -p "$work/data"
cat >"$work/roster.toml" <<EOF
[server]
listen = "127.0.0.1:$sftp_port"
host_keys = "$work/host_keys"
data_dir = "$work/data"

[admin]
listen = "127.0.0.1:$admin_port"
token = "frozen-store-bench-token-0123456789abcdef"

[store]
url = "postgres://roster@127.0.0.1:$PG_PORT/roster"

[[tenants]]
id = "acme"
password_hash = '$hash'
[tenants.import]
file = "users.csv"
EOF
"$BIN" serve -c "$work/roster.toml" 2>"$work/serve.log" &
serve_pid=$!
python3 - "$sftp_port" <<'PY'
import socket, sys, time
for _ in range(120):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit("the node did not start listening")
PY

# Logins with the tenant's password every half second until $work/stop exists; prints counts.
logins() {
    python3 - "$sftp_port" "$work/stop" <<'PY'
import os, sys, time, paramiko
port, stop = int(sys.argv[1]), sys.argv[2]
ok = failed = 0
while not os.path.exists(stop):
    try:
        t = paramiko.Transport(("127.0.0.1", port))
        t.connect(username="acme", password="bench-password")
        t.close()
        ok += 1
    except Exception as e:
        failed += 1
        print("login failed:", type(e).__name__, e, flush=True)
    time.sleep(0.5)
print(f"logins during the freeze: {ok} succeeded, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
PY
}

sample() {
    awk '/^VmRSS/ {rss=$2} /^Threads/ {t=$2} END {printf "RSS %d MB, %d threads", rss/1024, t}' \
        "/proc/$serve_pid/status"
    printf ', %d descriptors\n' "$(ls "/proc/$serve_pid/fd" | wc -l)"
}

echo "binary: $BIN; PostgreSQL frozen for ${FREEZE}s, a password login every 0.5 s"
echo "before the freeze: $(sample)"
postmaster=$(pgrep -f -- "-D $work/pg" | head -1 || true)
[ -n "$postmaster" ] || { echo "cannot find the PostgreSQL server process"; exit 1; }
mapfile -t frozen < <(echo "$postmaster"; pgrep -P "$postmaster" || true)
[ -n "${NO_FREEZE:-}" ] || kill -STOP "${frozen[@]}"  # NO_FREEZE=1: the same logins, PostgreSQL running
state=frozen
[ -z "${NO_FREEZE:-}" ] || state="(PostgreSQL running)"
logins &
login_pid=$!
started=$SECONDS
while [ $((SECONDS - started)) -lt "$FREEZE" ]; do
    sleep 10
    kill -0 "$serve_pid" 2>/dev/null || { echo "the node died"; exit 1; }
    echo "+$((SECONDS - started))s $state: $(sample)"
done
touch "$work/stop"
login_rc=0
wait "$login_pid" || login_rc=$?
kill -CONT "${frozen[@]}"
frozen=()
sleep 5
echo "5 s after PostgreSQL runs again: $(sample)"
rm -f "$work/stop"
(sleep 2; touch "$work/stop") &
logins | sed 's/during the freeze/after it/'
exit "$login_rc"
