#!/usr/bin/env bash
# SCIM push benchmark (issue 12): a first import of N users (default 100,000) into a tenant with
# [tenants.scim_push], pushed by `roster serve` to scim2-server (tests/scim_push/install.sh) on
# loopback. Prints the import time, the time from the end of the import until the push cursor
# has drained the change log, users/s and HTTP requests/s (counted from the provider's request
# log, by method: each new user is two lookup GETs, externalId then userName, and one POST),
# roster's peak RSS, and checks the provider holds N users.
# Usage: bench/scim_push.sh [N]   (ROSTER_BIN defaults to target/release/roster, else debug)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N="${1:-100000}"
BIN="${ROSTER_BIN:-target/release/roster}"
[ -x "$BIN" ] || BIN=target/debug/roster
[ -x "$BIN" ] || { echo "build roster first (cargo build --release)"; exit 1; }
SCIM="$(bash tests/scim_push/install.sh | tail -1)"
WORK="$(mktemp -d /tmp/roster-scim-bench.XXXXXX)"
SCIM_PORT=$(free_port); ADMIN_PORT=$(free_port); SFTP_PORT=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

"$SCIM" --hostname 127.0.0.1 --port "$SCIM_PORT" >"$WORK/scim.log" 2>&1 &
SCIM_PID=$!
PIDS+=($SCIM_PID)
HASH=$(printf "bench-password" | "$BIN" hash-password)
cat >"$WORK/roster.toml" <<TOML
[server]
listen = "127.0.0.1:$SFTP_PORT"
host_keys = "$WORK/host_keys"
data_dir = "$WORK/data"
max_upload_bytes = 2000000000
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "bench-admin-token-0123456789abcdef0123"
[[tenants]]
id = "bench"
password_hash = "$HASH"
[tenants.import]
file = "users.csv"
report = "never"
[tenants.scim_push]
url = "http://127.0.0.1:$SCIM_PORT"
TOML
mkdir -p "$WORK/data/tenants/bench"
python3 - "$N" "$WORK/data/tenants/bench/users.csv" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("email,first_name,last_name,mapping_code,job_title,org_unit\n")
    for i in range(n):
        f.write(f"user{i:07d}@bench.example,First{i},Last{i},E{i:07d},Clerk,HQ\n")
PY
"$BIN" -c "$WORK/roster.toml" serve >"$WORK/roster.log" 2>&1 &
ROSTER_PID=$!
PIDS+=($ROSTER_PID)
R() { "$BIN" -c "$WORK/roster.toml" "$@"; }
for _ in $(seq 100); do R nodes >/dev/null 2>&1 && break; sleep 0.2; done
echo "users: $N, cores: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg), roster: $BIN, provider: scim2-server (Python, one process)"
t0=$(date +%s.%N)
R run-now bench --json >/dev/null
t1=$(date +%s.%N)
echo "run-now answered after $(python3 -c "print(f'{$t1-$t0:.1f} s')") (the drain below counts from then, so it includes the import run)"
deadline=$(( $(date +%s) + ${MAX_DRAIN_S:-3600} ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    st=$(R scim-push bench --json)
    read -r pos backlog failing < <(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v["position"], v["backlog"], len(v["failing"]))' "$st")
    if [ "$backlog" = 0 ] && [ "$pos" -ge "$N" ]; then break; fi
    sleep 1
done
t2=$(date +%s.%N)
R history bench --json --limit 1 >"$WORK/record.json"
python3 - "$WORK/record.json" <<'PY'
import json, sys
from datetime import datetime
r = json.load(open(sys.argv[1]))[0]
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
took = ts(r["finished_at"]) - ts(r["started_at"])
print(f"import run: {r['status']}, {r['inserted']} inserted in {took:.1f} s")
PY
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/t}' "/proc/$1/stat"; }
echo "CPU time (user+system, whole run): roster $(cpu_s "$ROSTER_PID") s, scim2-server $(cpu_s "$SCIM_PID") s"
echo "roster peak RSS (VmHWM): $(( $(awk '$1=="VmHWM:" {print $2}' "/proc/$ROSTER_PID/status") / 1024 )) MiB"
python3 - "$t1" "$t2" "$N" "$failing" "$WORK/scim.log" <<'PY'
import re, sys
t1, t2, n, failing, log = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
d = t2 - t1
methods = {}
for line in open(log, errors="replace"):
    m = re.search(r'"(GET|POST|PATCH|PUT|DELETE) (\S+)', line)
    if m and m.group(2).startswith("/Users"):
        methods[m.group(1)] = methods.get(m.group(1), 0) + 1
total = sum(methods.values())
print(f"drain after the import: {d:.1f} s, {n/d:.0f} users/s, {total/d:.0f} requests/s "
      f"({total} requests to /Users: {methods}), failing users: {failing}")
PY
count=$(python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]+"/Users?count=1"))["totalResults"])' "http://127.0.0.1:$SCIM_PORT")
echo "provider holds $count user(s)"
[ "$count" = "$N" ]
