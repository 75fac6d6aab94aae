#!/usr/bin/env bash
# SCIM read benchmark (issue 12): filtered and paged SCIM requests on a 1,000,000-user tenant
# of the PostgreSQL store, answered by a real `roster serve` over HTTP.
#
# Loads ROWS users (../shared/bench/gen-users.py) through the import engine
# (examples/import_bench.rs --store-url) into a throwaway PostgreSQL cluster, puts every user
# in one of 10 groups (G0..G9, 100,000 members each at 1,000,000 users; a `groups` column is
# added to the bench file, which has none), runs `roster serve` on that database, and times each request with curl (the median of 5, after one warm-up), printing
# the HTTP status, totalResults, the median time, the CPU work of one request (core-seconds
# the machine spent busy during the five, divided by five: roster, PostgreSQL's processes and
# curl together; bench/lib.sh busy_seconds), and the server's peak RSS (VmHWM) before and
# after the requests (memory bounded by the page: it must not grow with the tenant).
#
# Usage: bench/scim_read.sh [ROWS] [debug|release]   (default 1000000 release)
#   ROSTER_BENCH_DIR=DIR   work folder (CSV files) instead of /tmp/roster-bench
#   ROSTER_BENCH_BIN=DIR   a folder holding `roster` and `import_bench` built elsewhere (e.g. the
#                          previous version, to compare on the same machine); nothing is built
#   ROSTER_BENCH_STORE=sled  the same requests on a sled store (loaded by import_bench without
#                          --store-url)
#   ROSTER_BENCH_KEEP=DIR  keep the loaded cluster in DIR (created and loaded if DIR/pg does
#                          not exist, reused without loading if it does; it is stopped at the
#                          end but not deleted): runs before/after on the same data, and
#                          EXPLAIN between runs. Delete DIR when done.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS="${1:-1000000}"
PROFILE="${2:-release}"
STORE="${ROSTER_BENCH_STORE:-postgres}"
SHARED="$(cd .. && pwd)/shared/bench"
WORK="${ROSTER_BENCH_DIR:-/tmp/roster-bench}"
mkdir -p "$WORK"
if [ -n "${ROSTER_BENCH_BIN:-}" ]; then
    ROSTER_BIN="$ROSTER_BENCH_BIN/roster"; IMPORT_BIN="$ROSTER_BENCH_BIN/import_bench"
else
    if [ "$PROFILE" = release ]; then
        cargo build --release --example import_bench --bin roster >/dev/null
    else
        cargo build --example import_bench --bin roster >/dev/null
    fi
    ROSTER_BIN="target/$PROFILE/roster"; IMPORT_BIN="target/$PROFILE/examples/import_bench"
fi
CSV="$WORK/users_$ROWS.csv"

# --- a throwaway (or kept) cluster ---------------------------------------------------------
KEEP="${ROSTER_BENCH_KEEP:-}"
if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; PGDIR=$(cd "$KEEP" && pwd); else PGDIR=$(mktemp -d /tmp/roster-bench-pg-XXXXXX); fi
LOAD=yes
[ -d "$PGDIR/pg" ] || [ -d "$PGDIR/roster-data/store" ] && LOAD=no
PG_STOP=()
PORT=$(free_port)
if [ "$STORE" = postgres ]; then
    pg_throwaway "$PGDIR"
    PORT=$PG_PORT
fi
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ ${#PG_STOP[@]} -gt 0 ] && { "${PG_STOP[@]}" >/dev/null 2>&1 || true; }
    [ -n "$KEEP" ] || rm -rf "$PGDIR"
}
trap cleanup EXIT
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U roster)
URL="postgres://roster@127.0.0.1:$PORT/roster_bench"

if [ "$LOAD" = yes ]; then
    [ -f "$CSV" ] || python3 "$SHARED/gen-users.py" "$ROWS" "$CSV"
    GROUPED="$WORK/users_${ROWS}_groups.csv"
    [ -f "$GROUPED" ] || awk -F';' 'NR == 1 { print $0 ";groups"; next }
        { print $0 ";G" substr($1, length($1), 1) }' "$CSV" >"$GROUPED"
    # The groups come through the import, as an HR file would bring them (until 2026-11-30
    # the PostgreSQL branch set them with one UPDATE, which left the tenant's table twice its
    # size until a VACUUM FULL: 701 MB instead of 367 MB at 1,000,000 users).
    echo "== load: $ROWS users through the import engine ($STORE)"
    if [ "$STORE" = sled ]; then
        mkdir -p "$PGDIR/roster-data"
        ROSTER_BENCH_GROUPS=1 "$IMPORT_BIN" "$PGDIR/roster-data/store" "$GROUPED"
    else
        "${PSQL[@]}" -d postgres -c "CREATE DATABASE roster_bench"
        ROSTER_BENCH_GROUPS=1 "$IMPORT_BIN" "$WORK/unused-sled" "$GROUPED" --store-url "$URL"
        "${PSQL[@]}" -d roster_bench -c "VACUUM ANALYZE roster.user_rows"
    fi
else
    echo "== reusing the $STORE store loaded in $PGDIR"
fi

# --- roster serve on that database ---------------------------------------------------------
SCIM_TOKEN=bench-scim-token-0123456789
ADMIN_PORT=$(free_port)
CONF="$PGDIR/roster.toml"
rm -f "$PGDIR/tenant_key" "$PGDIR/tenant_key.pub"; ssh-keygen -q -t ed25519 -N "" -f "$PGDIR/tenant_key"
cat >"$CONF" <<TOML
[server]
listen = "127.0.0.1:0"
host_keys = "$PGDIR/host_keys"
data_dir = "$PGDIR/roster-data"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "bench-admin-token-0123456789abcdef0123"

$(if [ "$STORE" = postgres ]; then printf '[store]\nurl = "%s"\n' "$URL"; fi)

[[tenants]]
id = "bench"
authorized_keys = ["$(cat "$PGDIR/tenant_key.pub")"]
scim_token_sha256 = "$(printf %s "$SCIM_TOKEN" | sha256sum | cut -d' ' -f1)"
[tenants.import]
file = "users.csv"
match_by = "mapping_code"
TOML
"$ROSTER_BIN" serve --config "$CONF" >"$PGDIR/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/scim/v2/Users" && break
    sleep 0.2
done
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "roster serve did not start:"; cat "$PGDIR/serve.log"; SERVER_PID=""; exit 1
fi
hwm() { awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$SERVER_PID/status"; }
echo "== roster serve up; peak RSS $(hwm)"

enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
timed() { # LABEL PATH
    local url="http://127.0.0.1:$ADMIN_PORT/scim/v2$2" times=() out status total
    curl -s -o /dev/null -H "Authorization: Bearer $SCIM_TOKEN" "$url"
    local before; before=$(busy_seconds)
    for _ in 1 2 3 4 5; do
        times+=("$(curl -s -o "$PGDIR/body" -w '%{time_total}' -H "Authorization: Bearer $SCIM_TOKEN" "$url")")
    done
    local cpu
    cpu=$(awk -v a="$before" -v b="$(busy_seconds)" 'BEGIN {printf "%.0f", (b - a) * 1000 / 5}')
    status=$(curl -s -o "$PGDIR/body" -w '%{http_code}' -H "Authorization: Bearer $SCIM_TOKEN" "$url")
    total=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("totalResults", d.get("id", "-")))' "$PGDIR/body" 2>/dev/null || echo "?")
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
    printf '%-48s %s  total %-8s  median %6.1f ms  cpu %4s ms\n' "$1" "$status" "$total" \
        "$(echo "$median * 1000" | bc -l)" "$cpu"
}
F() { echo "/Users?filter=$(enc "$1")&count=${2:-100}"; }
echo "== requests (median of 5)"
timed "first page (count=100)" "/Users?count=100"
timed "deep page (startIndex=500000)" "/Users?startIndex=500000&count=100"
timed "userName eq" "$(F 'userName eq "user777777@example.com"')"
timed "emails.value eq" "$(F 'emails.value eq "USER123456@example.com"')"
timed "externalId eq" "$(F 'externalId eq "0424242"')"
timed "id eq" "$(F 'id eq "0031337"')"
timed "meta.lastModified gt (nothing newer)" "$(F 'meta.lastModified gt "2099-01-01T00:00:00Z"')"
timed "meta.lastModified gt (everyone)" "$(F 'meta.lastModified gt "2000-01-01T00:00:00Z"')"
timed "active eq true" "$(F 'active eq true')"
timed "userName sw (prefix)" "$(F 'userName sw "user99999"')"
timed "title co (no index: full scan)" "$(F 'title co "engineer 7"')"
timed "title co, no match (full scan)" "$(F 'title co "nobody"')"
timed "title ew (100,000: just past one scan's cap)" "$(F 'title ew "7"')"
timed "title co (366,667: dense)" "$(F 'title co "engineer 2"')"
timed "title co (everyone)" "$(F 'title co "e"')"
timed "title co, deep page (startIndex=30000)" "$(F 'title co "engineer 7"')&startIndex=30000"
timed "title co (everyone), deep page (startIndex=900000)" "$(F 'title co "e"')&startIndex=900000"
timed "groups eq (100,000 members), page" "$(F 'groups eq "G3"')"
timed "/Groups excludedAttributes=members" "/Groups?excludedAttributes=members"
timed "/Groups/G3 excludedAttributes=members" "/Groups/G3?excludedAttributes=members"
timed "/Groups/G3 with members (tooMany: 400)" "/Groups/G3"
echo "== roster serve peak RSS after the requests: $(hwm)"
