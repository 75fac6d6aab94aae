#!/usr/bin/env bash
# Webhook delivery benchmark (issue 12) through a real server: `roster serve` (sled) with one
# tenant whose [[tenants.webhooks]] endpoint is bench/webhook-receiver.py on loopback, which
# verifies every message with the Standard Webhooks Python library and counts. The N-row file of
# ../shared/bench/gen-users.py (default 1,000,000) is uploaded with OpenSSH `sftp -b`.
# Prints: upload time, import time (the history record's started..finished), the import's
# inserted count, messages delivered (verified, distinct ids, changes they carry, by type), time
# from the end of the upload and from the end of the import until the last message was
# acknowledged, and roster's peak RSS (VmHWM). Exit 1 unless every change was announced.
# Usage: bench/webhooks.sh [N]   (ROSTER_BIN defaults to target/release/roster; KEEP=1 keeps
# the work folder with roster.log)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROOT="$PWD"
N="${1:-1000000}"
BIN="${ROSTER_BIN:-target/release/roster}"
[ -x "$BIN" ] || { echo "build roster first (cargo build --release)"; exit 1; }
BIN="$(readlink -f "$BIN")"
bash tests/webhooks/install.sh >/dev/null
command -v sftp >/dev/null || { echo "needs the OpenSSH client (tests/interop/install.sh)"; exit 1; }
GEN="$ROOT/../shared/bench/gen-users.py"
CSV="/tmp/roster-bench-users-$N.csv"
[ -s "$CSV" ] || python3 "$GEN" "$N" "$CSV"
WORK="$(mktemp -d /tmp/roster-webhook-bench.XXXXXX)"
SECRET="whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
TOKEN="bench-admin-token-0123456789abcdef0123"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
SFTP_PORT=$(free_port); ADMIN_PORT=$(free_port)
now() { date +%s.%N; }

python3 bench/webhook-receiver.py "$SECRET" "$WORK/receiver.port" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/receiver.port" ] && break; sleep 0.1; done
RECEIVER="http://127.0.0.1:$(cat "$WORK/receiver.port")"

ssh-keygen -q -t ed25519 -N "" -f "$WORK/client_key" -C roster-bench
q() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
{
    echo "[server]"
    echo "listen = $(q "127.0.0.1:$SFTP_PORT")"
    echo "host_keys = $(q "$WORK/host_keys")"
    echo "data_dir = $(q "$WORK/data")"
    echo "max_upload_bytes = 2000000000"
    echo "[admin]"
    echo "listen = $(q "127.0.0.1:$ADMIN_PORT")"
    echo "token = $(q "$TOKEN")"
    echo "[[tenants]]"
    echo 'id = "bench"'
    echo "authorized_keys = [$(q "$(cat "$WORK/client_key.pub")")]"
    echo "[tenants.import]"
    echo 'file = "users.csv"'
    echo 'match_by = "email"'
    echo 'report = "never"'
    echo "[tenants.import.columns]"
    for pair in mapping_code:id first_name:first_name last_name:last_name email:email \
        date_of_birth:date_of_birth sex:sex language:language org_unit:org_unit \
        location:location job_title:job_title; do
        echo "${pair%%:*} = \"${pair##*:}\""
    done
    echo "[tenants.reference]"
    echo "org_units = [$(python3 -c 'print(", ".join(f"\"OU{i}\"" for i in range(50)))')]"
    echo "locations = [$(python3 -c 'print(", ".join(f"\"LOC{i}\"" for i in range(20)))')]"
    echo "[[tenants.webhooks]]"
    echo "url = $(q "$RECEIVER/hook")"
    echo "secret = $(q "$SECRET")"
} >"$WORK/roster.toml"
mkdir -p "$WORK/data"
"$BIN" check-config -c "$WORK/roster.toml" >/dev/null
(cd "$WORK" && exec "$BIN" -c "$WORK/roster.toml" serve >"$WORK/roster.log" 2>&1) &
ROSTER_PID=$!
PIDS+=($ROSTER_PID)
R() { "$BIN" -c "$WORK/roster.toml" "$@"; }
J() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }
# The endpoint must have been seen (its cursor saved) before the import, or it would start after it.
for _ in $(seq 150); do
    pos=$(R webhooks bench --json 2>/dev/null | J 'v["webhooks"][0]["position"]' 2>/dev/null || true)
    [ -n "$pos" ] && [ "$pos" != None ] && break
    sleep 0.2
done
[ "$pos" != None ] && [ -n "$pos" ] || { echo "the webhook endpoint was never seen"; exit 1; }
rss() { awk -v k="$1:" '$1==k {print $2}' "/proc/$ROSTER_PID/status"; }
echo "rows: $N ($(du -m "$CSV" | cut -f1) MB), cores: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg), roster: $BIN (sled)"
echo "roster RSS idle: $(( $(rss VmRSS) / 1024 )) MiB"

printf 'put %s users.csv\n' "$CSV" >"$WORK/batch"
t_up0=$(now)
sftp -q -b "$WORK/batch" -i "$WORK/client_key" -P "$SFTP_PORT" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes bench@127.0.0.1 >/dev/null
t_up1=$(now)
# The import record (polled every 0.2 s, at most 30 min).
record=""
for _ in $(seq 9000); do
    record=$(R history bench --json --limit 1 2>/dev/null | J 'json.dumps(v[0]) if v else ""' 2>/dev/null || true)
    [ -n "$record" ] && break
    sleep 0.2
done
[ -n "$record" ] || { echo "no import record after 30 min"; exit 1; }
echo "$record" >"$WORK/record.json"
# Delivery: until the endpoint's backlog is 0 (polled every 0.2 s, at most 60 min).
for _ in $(seq 18000); do
    backlog=$(R webhooks bench --json 2>/dev/null | J 'v["webhooks"][0]["backlog"]' 2>/dev/null || echo x)
    [ "$backlog" = 0 ] && break
    sleep 0.2
done
curl -s "$RECEIVER/stats" >"$WORK/stats.json"
R webhooks bench --json >"$WORK/status.json"
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/t}' "/proc/$1/stat"; }
echo "roster CPU time (user+system, whole run): $(cpu_s "$ROSTER_PID") s"
echo "roster RSS after delivery: $(( $(rss VmRSS) / 1024 )) MiB, peak (VmHWM): $(( $(rss VmHWM) / 1024 )) MiB"
python3 - "$WORK" "$t_up0" "$t_up1" "$N" <<'PY'
import json, sys
from datetime import datetime
work, t_up0, t_up1, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rec = json.load(open(f"{work}/record.json"))
st = json.load(open(f"{work}/stats.json"))
ep = json.load(open(f"{work}/status.json"))["webhooks"][0]
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
started, finished = ts(rec["started_at"]), ts(rec["finished_at"])
print(f"upload (sftp put, connect to exit): {t_up1 - t_up0:.1f} s")
print(f"import: status {rec['status']}, inserted {rec.get('inserted')}, "
      f"run {finished - started:.1f} s (started {started - t_up1:.1f} s after the upload)")
print(f"delivered: {st['messages']} messages verified ({st['ids']} distinct ids, {st['refused']} refused), "
      f"{st['changes']} changes, types {st['types']}; endpoint position {ep['position']}, backlog {ep['backlog']}, "
      f"last error {ep['last_error']}")
last = st["last_ack"] or float("nan")
first = st["first_ack"] or float("nan")
print(f"first message acknowledged {first - finished:+.1f} s after the import finished")
print(f"last message acknowledged: {last - t_up1:.1f} s after the upload, {last - finished:.1f} s after the import finished")
print(f"delivery rate (first to last ack): {st['messages'] / max(last - first, 1e-9):.0f} messages/s, "
      f"{st['changes'] / max(last - first, 1e-9):.0f} changes/s")
ok = rec["status"] == "success" and st["changes"] == n and st["refused"] == 0
print("OK" if ok else "FAILED: not every change was announced and verified")
sys.exit(0 if ok else 1)
PY
