#!/usr/bin/env bash
# Web console benchmark (issue 13): the console's pages with 5,000 tenants in the config and one
# tenant ("bench") of 1,000,000 users, answered by a real `roster serve` (release) over HTTP.
#
# Loads ROWS users (../shared/bench/gen-users.py) into tenant "bench" through the import engine
# (examples/import_bench.rs, into the store the server will open: sled under data_dir, or a
# throwaway PostgreSQL cluster with STORE=postgres), imports the 1% changed file once more so
# the tenant has change history, then a file with 30% of the users missing, which is held;
# writes a config with TENANTS tenants, starts `roster serve`, signs in as the operator like a
# browser (the sign-in page's cookie and CSRF token, then the form), and times each page with
# curl: the median of 5 after one warm-up (the held run's first view: once), with the HTTP status
# and the page size. Prints the server's peak RSS (VmHWM) before and after.
# Target: every page under 300 ms.
#
# Usage: bench/console.sh [ROWS] [TENANTS]   (default 1000000 5000; STORE=sled|postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS="${1:-1000000}"
TENANTS="${2:-5000}"
STORE="${STORE:-sled}"
SHARED="$(cd .. && pwd)/shared/bench"
WORK=/tmp/roster-bench
mkdir -p "$WORK"
cargo build --release --example import_bench --bin roster >/dev/null
BIN=target/release
CSV="$WORK/users_$ROWS.csv"
[ -f "$CSV" ] || python3 "$SHARED/gen-users.py" "$ROWS" "$CSV"
CHANGED="$WORK/changed1_$ROWS.csv"
changed_copy "$CSV" "$CHANGED"

DIR=$(mktemp -d /tmp/roster-console-bench-XXXXXX)
SERVER_PID=""
PG_STOP=()
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ ${#PG_STOP[@]} -gt 0 ] && "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

STORE_SECTION=""
LOAD_ARGS=("$DIR/data/store")
if [ "$STORE" = postgres ]; then
    pg_throwaway "$DIR"
    PORT=$PG_PORT
    psql -X -q -h 127.0.0.1 -p "$PORT" -U roster -d postgres -c "CREATE DATABASE console_bench"
    URL="postgres://roster@127.0.0.1:$PORT/console_bench"
    STORE_SECTION=$'[store]\nurl = "'"$URL"'"'
    LOAD_ARGS=("$DIR/unused" --store-url "$URL")
fi
mkdir -p "$DIR/data"
echo "== load: $ROWS users into tenant bench ($STORE), then the 1% changed file"
"$BIN/examples/import_bench" "${LOAD_ARGS[0]}" "$CSV" "${LOAD_ARGS[@]:1}"
"$BIN/examples/import_bench" "${LOAD_ARGS[0]}" "$CHANGED" "${LOAD_ARGS[@]:1}"
echo "== a file with 30% of the users missing: held for approval (max_missing_percent 20)"
HELD_CSV="$WORK/held70_$ROWS.csv"
[ -f "$HELD_CSV" ] || head -n "$((ROWS * 7 / 10 + 1))" "$CHANGED" >"$HELD_CSV"
"$BIN/examples/import_bench" "${LOAD_ARGS[0]}" "$HELD_CSV" "${LOAD_ARGS[@]:1}"

echo "== config: $TENANTS tenants"
ADMIN_PORT=$(free_port)
TOKEN=bench-admin-token-0123456789abcdef0123
HASH=$(printf 'tenant-password' | "$BIN/roster" hash-password)
python3 - "$DIR/roster.toml" "$TENANTS" "$HASH" "$DIR" "$ADMIN_PORT" "$TOKEN" "$STORE_SECTION" <<'PY'
import sys
path, n, hash_, d, port, token, store = sys.argv[1:8]
out = [f'''[server]
listen = "127.0.0.1:0"
host_keys = "{d}/host_keys"
data_dir = "{d}/data"

[admin]
listen = "127.0.0.1:{port}"
token = "{token}"

{store}

[[tenants]]
id = "bench"
password_hash = "{hash_}"
[tenants.import]
file = "users.csv"
match_by = "mapping_code"
''']
for i in range(int(n) - 1):
    out.append(f'''[[tenants]]
id = "t{i:05}"
password_hash = "{hash_}"
[tenants.import]
file = "users_{{date}}.csv"
date_format = "%Y-%m-%d"
trigger = "both"
schedule = "{i % 60} 6 * * *"
''')
open(path, "w").write("\n".join(out))
PY
"$BIN/roster" serve --config "$DIR/roster.toml" >"$DIR/serve.log" 2>&1 &
SERVER_PID=$!
BASE="http://127.0.0.1:$ADMIN_PORT"
for _ in $(seq 300); do
    curl -s -o /dev/null "$BASE/login" && break
    sleep 0.2
done
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "roster serve did not start:"; tail -20 "$DIR/serve.log"; SERVER_PID=""; exit 1
fi
hwm() { awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$SERVER_PID/status"; }
echo "== roster serve up; peak RSS $(hwm)"

# Sign in like a browser: the sign-in page's cookie and token, then the operator form.
JAR="$DIR/cookies"
LOGIN=$(curl -s -c "$JAR" "$BASE/login")
CSRF=$(printf '%s' "$LOGIN" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -1)
curl -s -o /dev/null -b "$JAR" -c "$JAR" --data-urlencode "csrf=$CSRF" \
    --data-urlencode "token=$TOKEN" "$BASE/login/operator"
RUN_ID=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/tenants/bench/imports?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
KEY=$(sed -n 2p "$CSV" | cut -d';' -f1)
EMAIL=$(sed -n "$((ROWS / 2 + 2))p" "$CSV" | cut -d';' -f4)
LAST=$(sed -n "$((ROWS * 7 / 10 + 2))p" "$CSV" | cut -d';' -f3)

timed() { # LABEL PATH
    local url="$BASE$2" times=() status size out
    curl -s -o /dev/null -b "$JAR" "$url"
    for _ in 1 2 3 4 5; do
        times+=("$(curl -s -o "$DIR/body" -b "$JAR" -w '%{time_total}' "$url")")
    done
    out=$(curl -s -o "$DIR/body" -b "$JAR" -w '%{http_code} %{size_download}' "$url")
    status=${out% *}
    size=${out#* }
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
    printf '%-44s %s %8s B  median %7.1f ms\n' "$1" "$status" "$size" "$(echo "$median * 1000" | bc -l)"
}
once() { # LABEL PATH: one request, not warmed up
    local out
    out=$(curl -s -o "$DIR/body" -b "$JAR" -w '%{http_code} %{size_download} %{time_total}' "$BASE$2")
    read -r status size secs <<<"$out" || true
    printf '%-44s %s %8s B  once   %7.1f ms\n' "$1" "$status" "$size" "$(echo "$secs * 1000" | bc -l)"
}
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
echo "== pages (median of 5; key $KEY, email $EMAIL, last name $LAST)"
timed "overview, page 1" "/tenants"
timed "overview, page 100" "/tenants?page=100"
timed "overview, filtered (t049)" "/tenants?q=t049"
timed "history of bench" "/tenants/bench"
timed "a run of bench (the held one)" "/tenants/bench/runs/$RUN_ID"
once "held run, first view (plans it: a dry run)" "/tenants/bench/runs/$RUN_ID/held"
timed "held run, page 2 (the kept plan)" "/tenants/bench/runs/$RUN_ID/held?page=2"
timed "today's file of bench" "/tenants/bench/today"
timed "users of bench, page 1" "/tenants/bench/users"
timed "users of bench, page 2" "/tenants/bench/users?page=2"
timed "users of bench, page 10,000" "/tenants/bench/users?page=10000"
timed "users: status inactive" "/tenants/bench/users?status=inactive"
timed "users: search by key" "/tenants/bench/users?q=$(enc "$KEY")"
timed "users: search by email" "/tenants/bench/users?q=$(enc "$EMAIL")"
timed "users: search by last name" "/tenants/bench/users?q=$(enc "$LAST")"
timed "one user with its changes" "/tenants/bench/users/$(enc "$KEY")"
timed "preview form" "/tenants/bench/preview"
timed "column mapping helper form" "/mapping"
echo "== roster serve peak RSS after the pages: $(hwm)"
