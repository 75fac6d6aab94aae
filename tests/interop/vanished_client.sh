#!/usr/bin/env bash
# A client whose machine or network vanishes mid-upload (no FIN, no RST: its link goes down)
# must not hold its file for idle_timeout_secs: the server's TCP keepalive probes (30 s of
# silence, then three 10 s apart) end its session in about a minute, and another session may
# then upload the file. Real `roster serve`, real paramiko clients, two network namespaces
# joined by a veth pair whose client end is taken down.
#
#   tests/interop/vanished_client.sh      # as root (network namespaces); uses $ROSTER_BIN
#
# Prints each attempt of the second writer and exits 0 once it got in within 90 s of the cut
# (1 otherwise). idle_timeout_secs stays at 600, so only the keepalives can free the file.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROSTER_BIN=${ROSTER_BIN:-$ROOT/target/debug/roster}
PY=${PYTHON:-python3}
[ "$(id -u)" -eq 0 ] || { echo "vanished_client.sh: needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null || { echo "vanished_client.sh: needs ip (iproute2; tests/interop/install.sh)"; exit 1; }

DIR=$(mktemp -d /tmp/roster-vanished.XXXXXX)
NS_S="roster-ka-s-$$"; NS_C="roster-ka-c-$$"
SERVER_PID=""; HOLDER_PID=""
cleanup() {
    [ -n "$HOLDER_PID" ] && kill "$HOLDER_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    wait 2>/dev/null
    ip netns del "$NS_S" 2>/dev/null; ip netns del "$NS_C" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$NS_S" && ip netns add "$NS_C" || { echo "cannot make network namespaces"; exit 1; }
ip link add "ka-s-$$" type veth peer name "ka-c-$$"
ip link set "ka-s-$$" netns "$NS_S"; ip link set "ka-c-$$" netns "$NS_C"
ip -n "$NS_S" addr add 10.231.0.1/24 dev "ka-s-$$"; ip -n "$NS_C" addr add 10.231.0.2/24 dev "ka-c-$$"
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set "ka-s-$$" up; ip -n "$NS_C" link set "ka-c-$$" up

PW="vanished-Pw-1234"
HASH=$("$ROSTER_BIN" hash-password <<<"$PW")
cat >"$DIR/roster.toml" <<EOT
[server]
listen = "10.231.0.1:2222"
host_keys = "$DIR/host_keys"
data_dir = "$DIR/data"
idle_timeout_secs = 600
[admin]
listen = "127.0.0.1:0"
[[tenants]]
id = "acme"
password_hash = "$HASH"
[tenants.import]
file = "users.csv"
[tenants.import.columns]
email = "email"
first_name = "first"
last_name = "last"
EOT
cat >"$DIR/client.py" <<'EOT'
import paramiko, sys, time
t = paramiko.Transport(("10.231.0.1", 2222))
t.connect(username="acme", password=sys.argv[2])
s = paramiko.SFTPClient.from_transport(t)
if sys.argv[1] == "hold":
    f = s.open("users.csv", "w"); f.write(b"email,first,last\n"); f.flush()
    print("holding", flush=True); time.sleep(900)
try:
    s.open("users.csv", "w"); print("opened")
except Exception as e:
    print("refused:", e)
EOT

ip netns exec "$NS_S" "$ROSTER_BIN" serve -c "$DIR/roster.toml" >"$DIR/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 50); do
    grep -q "SFTP listening" "$DIR/serve.log" && break; sleep 0.2
done
ip netns exec "$NS_C" "$PY" "$DIR/client.py" hold "$PW" >"$DIR/hold.log" 2>&1 &
HOLDER_PID=$!
for _ in $(seq 1 50); do grep -q holding "$DIR/hold.log" && break; sleep 0.2; done
grep -q holding "$DIR/hold.log" || { echo "the first client did not start its upload"; cat "$DIR/hold.log" "$DIR/serve.log"; exit 1; }
second() { ip netns exec "$NS_S" "$PY" "$DIR/client.py" second "$PW" 2>&1; }
before=$(second)
echo "while the first client is there: $before"
case "$before" in *refused*) ;; *) echo "the second writer was not refused while the first writes"; exit 1;; esac

ip -n "$NS_C" link set "ka-c-$$" down   # the client's machine is gone: no FIN, no RST
t0=$SECONDS
while [ $((SECONDS - t0)) -lt 90 ]; do
    sleep 5
    r=$(second)
    echo "$((SECONDS - t0)) s after the cut: $r"
    case "$r" in *opened*) echo "vanished client released its file after $((SECONDS - t0)) s"; exit 0;; esac
done
echo "the file was still held 90 s after the client vanished"
tail -5 "$DIR/serve.log"
exit 1
