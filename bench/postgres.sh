#!/usr/bin/env bash
# PostgreSQL import benchmark (issue 11): the 1,000,000-user file of ../shared/bench/gen-users.py
# imported by the release engine (examples/import_bench.rs) into the PostgreSQL store three
# times (first import, unchanged re-import, 1% changed), and, in the same run against the same
# server, the baseline a DBA would write with no validation at all:
#
#   \copy into a staging table, one INSERT ... ON CONFLICT (id) DO UPDATE, and one
#   UPDATE ... SET active = false for ids not in the staging table (written as NOT EXISTS, the
#   anti-join PostgreSQL plans well; NOT IN over a million text ids without a hashed subplan
#   would make the baseline far slower than a DBA's).
#
# Prints wall time, CPU work and peak RSS (/usr/bin/time -v) of each. CPU work is the
# core-seconds the whole machine spent busy during the step (bench/lib.sh busy_seconds): the
# importer and the server's processes together, so what a step costs on more cores or fewer
# can be told from what it waits on; anything else running on the machine counts too. The
# server is a throwaway cluster (initdb in a temp folder, a free port, PostgreSQL's default
# settings; run as `nobody` when this script runs as root), stopped at the end. Peak RSS is the importing process only; the
# server's memory is the same for both and is not counted.
#
# Usage: bench/postgres.sh [ROWS]   (default 1000000; CSV files go to /tmp/roster-bench)
#   ROSTER_BENCH_DIR=DIR   work folder instead of /tmp/roster-bench (helpers benchmarking at once)
#   PG_OPTIONS='-c synchronous_commit=off'   extra server settings (default: none, i.e.
#                          synchronous_commit = on and fsync = on, PostgreSQL's defaults)
#   ROSTER_BENCH_BIN=PATH  an import_bench binary built elsewhere (e.g. the previous version,
#                          to compare on the same machine); nothing is built then
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS="${1:-1000000}"
SHARED="$(cd .. && pwd)/shared/bench"
WORK="${ROSTER_BENCH_DIR:-/tmp/roster-bench}"
mkdir -p "$WORK"
if [ -n "${ROSTER_BENCH_BIN:-}" ]; then BIN="$ROSTER_BENCH_BIN"; else
    cargo build --release --example import_bench >/dev/null
    BIN=target/release/examples/import_bench
fi

CSV="$WORK/users_$ROWS.csv"
[ -f "$CSV" ] || python3 "$SHARED/gen-users.py" "$ROWS" "$CSV"
cp "$CSV" "$WORK/unchanged.csv" && echo >>"$WORK/unchanged.csv"
CHANGED="$WORK/changed1_$ROWS.csv"
changed_copy "$CSV" "$CHANGED"

# --- a throwaway cluster -------------------------------------------------------------------
PGDIR=$(mktemp -d /tmp/roster-bench-pg-XXXXXX)
pg_throwaway "$PGDIR" "${PG_OPTIONS:-}"
stop_pg() { "${PG_STOP[@]}" >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
trap stop_pg EXIT
PORT=$PG_PORT
"${PSQL[@]}" -d postgres -c "CREATE DATABASE roster_bench" -c "CREATE DATABASE baseline"
URL="postgres://roster@127.0.0.1:$PORT/roster_bench"

"${PSQL[@]}" -d baseline <<'SQL'
CREATE TABLE users (
    id text PRIMARY KEY, first_name text, last_name text, email text, date_of_birth text,
    sex text, language text, org_unit text, location text, job_title text,
    active boolean NOT NULL DEFAULT true
);
SQL
baseline_sql() { # CSV -> the baseline's SQL for that file, in $WORK/baseline.sql
    cat >"$WORK/baseline.sql" <<SQL
BEGIN;
CREATE TEMP TABLE staging (id text, first_name text, last_name text, email text,
    date_of_birth text, sex text, language text, org_unit text, location text, job_title text)
    ON COMMIT DROP;
\copy staging FROM '$1' WITH (FORMAT csv, DELIMITER ';', HEADER true)
INSERT INTO users (id, first_name, last_name, email, date_of_birth, sex, language, org_unit,
                   location, job_title, active)
SELECT id, first_name, last_name, email, date_of_birth, sex, language, org_unit, location,
       job_title, true FROM staging
ON CONFLICT (id) DO UPDATE SET first_name = EXCLUDED.first_name,
    last_name = EXCLUDED.last_name, email = EXCLUDED.email,
    date_of_birth = EXCLUDED.date_of_birth, sex = EXCLUDED.sex, language = EXCLUDED.language,
    org_unit = EXCLUDED.org_unit, location = EXCLUDED.location,
    job_title = EXCLUDED.job_title, active = true;
UPDATE users u SET active = false
 WHERE u.active AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.id = u.id);
COMMIT;
SELECT 'baseline done';
SQL
}

measure() { # label, command...
    local label="$1"; shift
    local before; before=$(busy_seconds)
    local out; out=$( { /usr/bin/time -v "$@" >"$WORK/out.txt"; } 2>&1 )
    local wall rss cpu
    cpu=$(awk -v a="$before" -v b="$(busy_seconds)" 'BEGIN {printf "%.1f", b - a}')
    wall=$(echo "$out" | awk -F': ' '/Elapsed \(wall clock\)/ {print $2}')
    rss=$(echo "$out" | awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}')
    printf '%-30s wall %-8s cpu %5s core-s  peak RSS %4s MB | %s\n' "$label" "$wall" "$cpu" "$rss" \
        "$(head -1 "$WORK/out.txt")"
}

echo "rows: $ROWS ($(du -hL "$CSV" | cut -f1)), cores: $(nproc), PostgreSQL $("${PSQL[@]}" -d postgres -At -c "SHOW server_version" | cut -d" " -f1)," \
    "$("${PSQL[@]}" -d postgres -At -c "SELECT 'synchronous_commit ' || current_setting('synchronous_commit') || ', fsync ' || current_setting('fsync')")"
baseline_sql "$CSV"
measure "baseline \\copy first" "${PSQL[@]}" -At -d baseline -f "$WORK/baseline.sql"
measure "roster first import" "$BIN" "$WORK/pg-unused" "$CSV" --store-url "$URL"
baseline_sql "$CSV"   # the same rows (\copy refuses the blank line that makes Roster's copy new bytes)
measure "baseline \\copy unchanged" "${PSQL[@]}" -At -d baseline -f "$WORK/baseline.sql"
measure "roster unchanged re-import" "$BIN" "$WORK/pg-unused" "$WORK/unchanged.csv" --store-url "$URL"
baseline_sql "$CHANGED"
measure "baseline \\copy 1% changed" "${PSQL[@]}" -At -d baseline -f "$WORK/baseline.sql"
measure "roster 1% changed" "$BIN" "$WORK/pg-unused" "$CHANGED" --store-url "$URL"
"${PSQL[@]}" -d roster_bench -At -c \
    "SELECT 'roster users: ' || count(*) || ', active ' || count(*) FILTER (WHERE status = 'active') FROM roster.users"
"${PSQL[@]}" -d baseline -At -c \
    "SELECT 'baseline users: ' || count(*) || ', active ' || count(*) FILTER (WHERE active) FROM users"
