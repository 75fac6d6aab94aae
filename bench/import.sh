#!/usr/bin/env bash
# Import benchmark (issue 3): 1,000,000 users from ../shared/bench/gen-users.py, imported with
# the release engine (examples/import_bench.rs) three times — into an empty store, unchanged
# (same rows, different bytes: one trailing blank line), and with 1% of rows changed — and the
# Python + SQLite baseline (../shared/bench/py-sqlite-import.py) on the same file.
# Prints wall time, rows/s and peak RSS (from /usr/bin/time -v) for each.
# Usage: bench/import.sh [ROWS]   (default 1000000; files go to /tmp/roster-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROWS="${1:-1000000}"
SHARED="$(cd .. && pwd)/shared/bench"
WORK=/tmp/roster-bench
mkdir -p "$WORK"
cargo build --release --example import_bench >/dev/null
BIN=target/release/examples/import_bench

CSV="$WORK/users_$ROWS.csv"
[ -f "$CSV" ] || python3 "$SHARED/gen-users.py" "$ROWS" "$CSV"
cp "$CSV" "$WORK/unchanged.csv" && echo >>"$WORK/unchanged.csv"
CHANGED="$WORK/changed1_$ROWS.csv"
changed_copy "$CSV" "$CHANGED"

measure() { # label, command...
    local label="$1"; shift
    local out; out=$( { /usr/bin/time -v "$@" >"$WORK/out.txt"; } 2>&1 )
    local wall rss
    wall=$(echo "$out" | awk -F': ' '/Elapsed \(wall clock\)/ {print $2}')
    rss=$(echo "$out" | awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}')
    printf '%-28s wall %-8s peak RSS %4s MB | %s\n' "$label" "$wall" "$rss" "$(head -1 "$WORK/out.txt")"
}

rm -rf "$WORK/store" "$WORK/baseline.db"
echo "rows: $ROWS ($(du -h "$CSV" | cut -f1)), cores: $(nproc)"
measure "roster first import" "$BIN" "$WORK/store" "$CSV"
measure "roster unchanged re-import" "$BIN" "$WORK/store" "$WORK/unchanged.csv"
measure "roster 1% changed" "$BIN" "$WORK/store" "$CHANGED"
measure "python+sqlite first" python3 "$SHARED/py-sqlite-import.py" "$CSV" "$WORK/baseline.db"
measure "python+sqlite re-import" python3 "$SHARED/py-sqlite-import.py" "$CHANGED" "$WORK/baseline.db"
