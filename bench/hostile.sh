#!/usr/bin/env bash
# What a broken or hostile upload costs one run (review s25): peak RSS and wall time of the
# release engine (examples/import_bench.rs) on files made to grow memory, beside the
# 1,000,000-row file of ../shared/bench/gen-users.py as the baseline of an honest import.
#   dup-key-N      N rows giving one key (each skipped row's reason listed every row)
#   dup-email-N    N keys giving one email (the same, for the email check)
#   delimiters     one data row of 50 MB of delimiters (the csv reader keeps 8 bytes a cell)
#   misshapen      50,000,000 rows of one cell under a ten-column header (a reason per row)
#   one-bucket     2,000,000 valid rows of one key (one bucket held the whole file)
# Usage: bench/hostile.sh [CASE...]   (default: all; files go to /tmp/roster-hostile)
# ROSTER_BENCH_BIN=PATH runs another import_bench binary (a previous version, to compare);
# give an old one only the cases it survives (dup-key-50000 asks it for about 15 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="$(cd .. && pwd)/shared/bench"
WORK=/tmp/roster-hostile
mkdir -p "$WORK"
BIN="${ROSTER_BENCH_BIN:-}"
if [ -z "$BIN" ]; then
    cargo build --release --example import_bench >/dev/null
    BIN=target/release/examples/import_bench
fi
HEADER='id;first_name;last_name;email;date_of_birth;sex;language;org_unit;location;job_title'

dup_rows() { # key|email N: N rows that all give one key, or one email under N keys
    python3 - "$1" "$2" "$HEADER" <<'PY'
import sys
same, n, header = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(header)
for i in range(n):
    key = "K" if same == "key" else f"{i:07}"
    email = "same@example.com" if same == "email" else f"u{i}@example.com"
    print(f"{key};F{i};L{i};{email};05.10.2004;M;hr;OU0;LOC0;Engineer")
PY
}

make_case() { # name: writes $WORK/<name>.csv unless there
    local f="$WORK/$1.csv"
    [ -f "$f" ] && return 0
    case "$1" in
        baseline) python3 "$SHARED/gen-users.py" 1000000 "$f" ;;
        dup-key-*) dup_rows key "${1#dup-key-}" >"$f" ;;
        dup-email-*) dup_rows email "${1#dup-email-}" >"$f" ;;
        delimiters) { echo "$HEADER"; head -c 52428800 /dev/zero | tr '\0' ';'; echo; } >"$f" ;;
        misshapen) { echo "$HEADER"; yes x | head -n 50000000 || true; } >"$f" ;;
        one-bucket) python3 - "$f" "$HEADER" <<'PY'
import sys
f, header = sys.argv[1], sys.argv[2]
row = "K;F;L;k@example.com;05.10.2004;M;hr;OU0;LOC0;Engineer\n"
with open(f, "w") as o:
    o.write(header + "\n")
    for _ in range(20):
        o.write(row * 100000)
PY
        ;;
        *) echo "unknown case $1" >&2; exit 2 ;;
    esac
}

run_case() { # name: import_bench's own line (wall time, peak RSS = VmHWM) and first message
    make_case "$1"
    rm -rf "$WORK/store"
    "$BIN" "$WORK/store" "$WORK/$1.csv" >"$WORK/out.txt" 2>&1 || true
    printf '%-16s %5s | %s\n' "$1" "$(du -h "$WORK/$1.csv" | cut -f1)" \
        "$(head -3 "$WORK/out.txt" | cut -c1-400 | tr '\n' ' ')"
}

CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(baseline dup-key-5000 dup-key-50000 dup-email-50000 delimiters misshapen one-bucket)
echo "binary: $BIN, cores: $(nproc)"
for c in "${CASES[@]}"; do run_case "$c"; done
