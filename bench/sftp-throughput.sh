#!/usr/bin/env bash
# Upload throughput: Roster vs OpenSSH sshd (internal-sftp), same client, same file, same machine.
#
#   cargo build --release                 # this script builds nothing
#   bench/sftp-throughput.sh              # as root (sshd needs it); prints figures, asserts nothing
#
# Environment:
#   ROSTER_BIN    roster binary (default: <repo>/target/release/roster)
#   RUNS          uploads per server (default 5); runs alternate roster, sshd, roster, sshd, ...
#   SIZE_MB       file size in MiB (default 1024); the file is created once as /tmp/roster-bench-<N>M.bin
#   TARGETS       "roster sshd" (default), or just one of them
#   CIPHER        optional: force a cipher on the client (e.g. aes128-gcm@openssh.com); default: negotiate
#
# Both servers listen on 127.0.0.1 only, each on a free port, with throwaway keys in a temp dir.
# The client is OpenSSH `sftp -b` with key auth. MB/s are 10^6 bytes per second of wall time of the
# whole `sftp` command (connect + auth + put), median over RUNS, and the ratio Roster/sshd.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=tests/interop/lib.sh
. "$ROOT/tests/interop/lib.sh"

ROSTER_BIN=${ROSTER_BIN:-$ROOT/target/release/roster}
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-1024}
TARGETS=${TARGETS:-roster sshd}
FILE=/tmp/roster-bench-${SIZE_MB}M.bin
BYTES=$((SIZE_MB * 1048576))

if [[ " $TARGETS " == *" roster "* ]] && [ ! -x "$ROSTER_BIN" ]; then
    echo "no roster binary at $ROSTER_BIN (run: cargo build --release), or set TARGETS=sshd"; exit 2
fi
if [[ " $TARGETS " == *" sshd "* ]] && [ "$(id -u)" -ne 0 ]; then
    echo "sshd must be started as root (or set TARGETS=roster)"; exit 2
fi

if [ "$(stat -c %s "$FILE" 2>/dev/null)" != "$BYTES" ]; then
    echo "creating $FILE ($SIZE_MB MiB of random data)"
    head -c "$BYTES" /dev/urandom >"$FILE.tmp" && mv "$FILE.tmp" "$FILE"
fi

DIR=$(mktemp -d /tmp/roster-bench.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KEY="$DIR/client_key"
make_client_key "$KEY"
declare -A PORT DEST USERNAME CLEAN

if [[ " $TARGETS " == *" roster "* ]]; then
    PORT[roster]=$(free_port)
    printf 'bench|%s|%s\n' "$(hash_password "bench-$RANDOM$RANDOM")" "$(cat "$KEY.pub")" \
        | MAX_UPLOAD_BYTES=$((BYTES + 1048576)) write_roster_config "$DIR/roster.toml" "$DIR/roster" "${PORT[roster]}" "$(free_port)"
    mkdir -p "$DIR/roster/data"
    "$ROSTER_BIN" serve -c "$DIR/roster.toml" >"$DIR/roster.log" 2>&1 &
    PIDS+=($!)
    USERNAME[roster]=bench
    DEST[roster]=bench.bin
    CLEAN[roster]="$DIR/roster/data/tenants/bench/bench.bin"
fi
if [[ " $TARGETS " == *" sshd "* ]]; then
    PORT[sshd]=$(free_port)
    mkdir -p "$DIR/sshd" "$DIR/sshd-up"
    cp "$KEY.pub" "$DIR/sshd/authorized_keys"
    write_sshd_config "$DIR/sshd/sshd_config" "$DIR/sshd" "${PORT[sshd]}" "$DIR/sshd/authorized_keys"
    /usr/sbin/sshd -D -e -f "$DIR/sshd/sshd_config" >"$DIR/sshd.log" 2>&1 &
    PIDS+=($!)
    USERNAME[sshd]=root
    DEST[sshd]="$DIR/sshd-up/bench.bin"
    CLEAN[sshd]="$DIR/sshd-up/bench.bin"
fi

OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes
      -o IdentitiesOnly=yes -i "$KEY")
[ -n "${CIPHER:-}" ] && OPTS+=(-o "Ciphers=$CIPHER")

for t in $TARGETS; do
    if ! wait_ssh_banner "${PORT[$t]}" 60; then
        echo "$t did not start; log:"; tail -n 20 "$DIR/$t.log"; exit 1
    fi
    cipher=$(timeout 30 ssh -v -p "${PORT[$t]}" "${OPTS[@]}" -s "${USERNAME[$t]}@127.0.0.1" sftp </dev/null 2>&1 \
             | sed -n 's/.*kex: client->server cipher: \([^ ]*\).*/\1/p' | head -n1)
    echo "$t: 127.0.0.1:${PORT[$t]}, cipher ${cipher:-unknown}"
done

upload() {                       # upload TARGET -> prints MB/s, or "fail"
    local t=$1 start end
    printf 'put %s %s\n' "$FILE" "${DEST[$t]}" >"$DIR/batch.$t"
    rm -f "${CLEAN[$t]}"
    sync
    start=$(date +%s.%N)
    if ! timeout 600 sftp -P "${PORT[$t]}" "${OPTS[@]}" -b "$DIR/batch.$t" "${USERNAME[$t]}@127.0.0.1" >"$DIR/out.$t" 2>&1; then
        echo fail; sed 's/^/    /' "$DIR/out.$t" >&2; return
    fi
    end=$(date +%s.%N)
    if [ "$(stat -c %s "${CLEAN[$t]}" 2>/dev/null)" != "$BYTES" ]; then echo fail; echo "    $t: uploaded size wrong" >&2; return; fi
    rm -f "${CLEAN[$t]}"
    "${PYTHON:-python3}" -c "import sys; print('%.1f' % ($BYTES / 1e6 / (float(sys.argv[2]) - float(sys.argv[1]))))" "$start" "$end"
}

declare -A RESULTS
for i in $(seq 1 "$RUNS"); do
    order=$TARGETS
    # alternate which server goes first, so neither always gets the warmer cache
    if [ $((i % 2)) -eq 0 ]; then order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for t in $order; do
        r=$(upload "$t")
        RESULTS[$t]="${RESULTS[$t]:-} $r"
        if [ "$r" = fail ]; then u=""; else u=" MB/s"; fi
        printf 'run %d  %-6s %s%s\n' "$i" "$t" "$r" "$u"
    done
done

median() { echo "$@" | tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo "---"
for t in $TARGETS; do
    printf '%-6s median %s MB/s  (runs:%s)\n' "$t" "$(median ${RESULTS[$t]})" "${RESULTS[$t]}"
done
if [[ " $TARGETS " == *" roster "* && " $TARGETS " == *" sshd "* ]]; then
    r=$(median ${RESULTS[roster]}); s=$(median ${RESULTS[sshd]})
    "${PYTHON:-python3}" -c "import sys
try: print('ratio roster/sshd: %.2f' % (float(sys.argv[1]) / float(sys.argv[2])))
except ValueError: print('ratio roster/sshd: n/a')" "$r" "$s"
fi
