#!/usr/bin/env bash
# Roster interop suite: drives a running `roster serve` with real SFTP clients over loopback.
#
#   tests/interop/install.sh        # once: OpenSSH client/server, lftp, putty-tools, curl, rclone,
#                                   #       paramiko, asyncssh, argon2-cffi
#   cargo build                     # this script builds nothing
#   tests/interop/run.sh            # uses $ROSTER_BIN (default target/debug/roster)
#
# Environment:
#   ROSTER_BIN        roster binary (default: <repo>/target/debug/roster)
#   INTEROP_TARGET    "roster" (default) or "sshd": run the same checks against OpenSSH's sshd with
#                     internal-sftp chrooted to a temp dir (validates the suite itself; root only;
#                     password-only and Roster-only checks are skipped there)
#   INTEROP_TIMEOUT   seconds allowed per client call (default 60)
#   INTEROP_ONLY      space-separated check names to run (default: all)
#   INTEROP_KEEP=1    keep the temp dir (config, keys, logs) for inspection
#
# Python: $PYTHON (default python3) must have paramiko, asyncssh and argon2 (install.sh does that).
#
# What it does: makes a temp dir with a config, a client ed25519 key and test payloads, starts the
# server on a free 127.0.0.1 port, waits for its SSH banner, runs every check (each uploads, reads
# back and compares sha256, or asserts a refusal), stops the server, and prints
# "N passed, N failed" as the last line. Exits 1 if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/interop/lib.sh
. "$HERE/lib.sh"

TARGET=${INTEROP_TARGET:-roster}
ROSTER_BIN=${ROSTER_BIN:-$ROOT/target/debug/roster}
T=${INTEROP_TIMEOUT:-60}
ONLY=${INTEROP_ONLY:-}
PW="interop-Pw-4711"

case "$TARGET" in
    roster)
        [ -x "$ROSTER_BIN" ] || { echo "run.sh: no roster binary at $ROSTER_BIN (cargo build first)"; echo "0 passed, 1 failed"; exit 1; }
        DIR=$(mktemp -d /tmp/roster-interop.XXXXXX) ;;
    sshd)
        [ "$(id -u)" -eq 0 ] || { echo "run.sh: INTEROP_TARGET=sshd needs root"; exit 2; }
        # ChrootDirectory demands root-owned, non-world-writable parents: not under /tmp.
        DIR=$(mktemp -d /root/roster-interop.XXXXXX) ;;
    *) echo "run.sh: INTEROP_TARGET must be roster or sshd"; exit 2 ;;
esac
chmod 755 "$DIR"
mkdir -p "$DIR/logs" "$DIR/dl" "$DIR/work"
SERVER_PID=""

cleanup() {
    [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"
    if [ "${INTEROP_KEEP:-0}" = 1 ]; then echo "run.sh: kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ set-up
KEY="$DIR/client_key"
make_client_key "$KEY"
# Extra client keys: HR systems often still use RSA (rsa-sha2-256/512 signatures) or ECDSA.
ssh-keygen -q -t rsa -b 3072 -N '' -C rsa-client -f "$DIR/client_rsa"
ssh-keygen -q -t ecdsa -b 256 -N '' -C ecdsa-client -f "$DIR/client_ecdsa"
ALL_PUBS="$(cat "$KEY.pub");$(cat "$DIR/client_rsa.pub");$(cat "$DIR/client_ecdsa.pub")"
PORT=$(free_port)
HOME_DIR="$DIR/data/tenants/acme"

# Payloads: odd sizes so nothing lines up with a block boundary.
P1="$DIR/payload.bin";   head -c $((3 * 1048576 + 12345)) /dev/urandom >"$P1"
HALF="$DIR/half.bin";    head -c $((1048576 + 777)) "$P1" >"$HALF"
EMPTY="$DIR/empty.bin";  : >"$EMPTY"
touch -d '2020-02-03 04:05:06 UTC' "$P1"

if [ "$TARGET" = roster ]; then
    LOGIN=acme
    FLOOD_USER=flood
    PASSWORD=$PW
    ADMIN_PORT=$(free_port)
    HASH=$(hash_password "$PW")
    LIMIT=$((16 * 1048576))                   # small upload limit, so the limit check is quick
    printf 'acme|%s|%s\nflood|%s|%s\n' "$HASH" "$ALL_PUBS" "$HASH" "$(cat "$KEY.pub")" \
        | MAX_UPLOAD_BYTES=$LIMIT write_roster_config "$DIR/roster.toml" "$DIR" "$PORT" "$ADMIN_PORT"
    mkdir -p "$DIR/data"
    "$ROSTER_BIN" serve -c "$DIR/roster.toml" >"$DIR/server.log" 2>&1 &
    SERVER_PID=$!
else
    LOGIN=root
    FLOOD_USER=root
    PASSWORD=""                               # no system password to use; key auth everywhere
    mkdir -p "$HOME_DIR"
    tr ';' '\n' <<<"$ALL_PUBS" >"$DIR/authorized_keys"
    write_sshd_config "$DIR/sshd_config" "$DIR" "$PORT" "$DIR/authorized_keys" "$HOME_DIR"
    /usr/sbin/sshd -D -e -f "$DIR/sshd_config" >"$DIR/server.log" 2>&1 &
    SERVER_PID=$!
fi

echo "run.sh: target=$TARGET port=$PORT dir=$DIR"
if ! wait_ssh_banner "$PORT" 60; then
    echo "run.sh: server did not answer on 127.0.0.1:$PORT within 60 s; its log:"
    tail -n 40 "$DIR/server.log" | sed 's/^/    /'
    echo "0 passed, 1 failed"
    exit 1
fi

SSH_COMMON=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
            -o BatchMode=yes -o ConnectTimeout=10 -o IdentitiesOnly=yes -o ServerAliveInterval=5
            -o ServerAliveCountMax=3 -i "$KEY")
SFTP=(timeout "$T" sftp -P "$PORT" "${SSH_COMMON[@]}")

export RT_PORT=$PORT RT_USER=$LOGIN RT_PASSWORD=$PASSWORD RT_KEY=$KEY RT_WORK="$DIR/work" \
       RT_HOME=$HOME_DIR RT_FILE=$P1 RT_TARGET=$TARGET RT_SERVER_LOG="$DIR/server.log" \
       RT_FLOOD_USER=$FLOOD_USER
# OpenSSH's sftp-server drops the connection on any packet over 256 KiB, so against sshd the
# asyncssh check uses 255 KiB blocks; Roster must take asyncssh's 1 MiB blocks (issue 2).
if [ "$TARGET" = sshd ]; then export RT_ASYNCSSH_BLOCK=$((255 * 1024)); fi

# ------------------------------------------------------------------ check runner
PASSED=0; FAILED=0; SKIPPED=0; FAILED_NAMES=()

run_check() {                    # run_check NAME FUNCTION
    local name=$1 fn=$2 log="$DIR/logs/$1.log" rc
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    ( cd "$DIR/work" && "$fn" ) >"$log" 2>&1
    rc=$?
    if [ "$rc" -eq 77 ]; then
        SKIPPED=$((SKIPPED + 1))
        echo "SKIP $name: $(grep -m1 '^SKIP' "$log" | sed 's/^SKIP:\? *//')"
        return
    fi
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1)); echo "PASS $name"
        grep '^INFO' "$log" | sed 's/^/    /'
    else
        FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name"); echo "FAIL $name (exit $rc)"
        tail -n 40 "$log" | sed 's/^/    | /'
    fi
}

# Each check runs in its own subshell, so fail/skip end just that check.
# Note: never pipe into grep -q here (pipefail + SIGPIPE); use grep -q PATTERN <<<"$var".
fail() { echo "assertion failed: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
same() { [ "$(sha256sum <"$1")" = "$(sha256sum <"$2")" ] || fail "sha256 of $2 differs from $1"; }
py() { timeout "$T" "${PYTHON:-python3}" "$HERE/clients.py" "$1"; }
batch() { printf '%s\n' "$@" >"$DIR/work/batch.txt"; cat "$DIR/work/batch.txt" | sed 's/^/batch> /'; }

# ------------------------------------------------------------------ OpenSSH sftp / scp
c_sftp_put_get() {
    batch "put $P1 s1.bin" "put $EMPTY empty.bin" "get s1.bin $DIR/dl/s1.bin" \
          "get empty.bin $DIR/dl/empty.bin" "ls -l"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "sftp -b exited $?"
    same "$P1" "$DIR/dl/s1.bin" && same "$P1" "$HOME_DIR/s1.bin" || return 1
    [ -f "$DIR/dl/empty.bin" ] && [ ! -s "$DIR/dl/empty.bin" ] || fail "empty file did not round-trip"
}

c_sftp_reput() {
    # 1) a partial upload (first 1 MiB) completed with reput (STAT, then WRITE|APPEND from the size)
    batch "put $HALF rp.bin" "reput $P1 rp.bin" "get rp.bin $DIR/dl/rp1.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "sftp -b (partial + reput) exited $?"
    same "$P1" "$DIR/dl/rp1.bin" || return 1
    # 2) the remote file truncated behind the server's back, then reput again
    truncate -s 200001 "$HOME_DIR/rp.bin" || fail "could not truncate $HOME_DIR/rp.bin"
    batch "reput $P1 rp.bin" "get rp.bin $DIR/dl/rp2.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "sftp -b (truncated + reput) exited $?"
    same "$P1" "$DIR/dl/rp2.bin"
}

c_sftp_rename_ls_df() {
    batch "put $P1 rn1.bin" "put $HALF rn2.bin" "rename rn1.bin rn-moved.bin" \
          "rename rn-moved.bin rn2.bin" "ls -l" "df -h" "df -i" "get rn2.bin $DIR/dl/rn2.bin"
    local out
    out=$("${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" 2>&1) || { echo "$out"; fail "sftp -b exited non-zero"; return 1; }
    echo "$out"
    same "$P1" "$DIR/dl/rn2.bin" || return 1   # rename onto an existing name = posix-rename
    local listing; listing=$(echo "$out" | grep -v '^sftp>')   # drop the echoed commands
    grep -q 'rn2.bin' <<<"$listing" || fail "ls -l does not list rn2.bin"
    grep -q 'rn1.bin\|rn-moved.bin' <<<"$listing" && fail "ls -l still lists a renamed-away name"
    grep -Eq '^ +Size +Used +Avail' <<<"$out" || fail "df -h printed no statvfs table"
    return 0
}

c_sftp_ls_longname() {
    # `ls -l` of a folder prints the server's READDIR longname verbatim. FileZilla and WinSCP parse
    # that text like Unix `ls -l` output (OpenSSH: "-rw-r--r--    1 user group  1234 Nov 21 14:30 name",
    # time for recent files, year for old ones), so it must look like that.
    batch "put $HALF longname.bin" "ls -l"
    local out line
    out=$("${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" 2>&1) || { echo "$out"; fail "sftp -b exited non-zero"; }
    echo "$out"
    line=$(grep -v '^sftp>' <<<"$out" | grep ' longname\.bin$' | head -n1)
    [ -n "$line" ] || fail "ls -l printed no line for longname.bin"
    grep -Eq '^-[rwxsStT-]{9}[.+@]? +[0-9?]+ +[^ ]+ +[^ ]+ +'"$(stat -c %s "$HALF")"' +[A-Z][a-z]{2} +[0-9]{1,2} +([0-9]{2}:[0-9]{2}|[0-9]{4}) +longname\.bin$' <<<"$line" \
        || fail "longname is not in ls -l form: '$line'"
}

c_sftp_put_preserve_fsync() {
    # put -p: FSETSTAT mtime before CLOSE; put -f: fsync@openssh.com
    batch "put -p -f $P1 pf.bin" "get -p pf.bin $DIR/dl/pf.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "sftp -b exited $?"
    same "$P1" "$DIR/dl/pf.bin" || return 1
    local want got
    want=$(stat -c %Y "$P1"); got=$(stat -c %Y "$DIR/dl/pf.bin")
    [ "$want" = "$got" ] || fail "mtime after put -p / get -p is $got, expected $want"
}

c_sftp_names_overwrite() {
    # Real HR file names have spaces and non-ASCII; a second put onto a longer file truncates it.
    batch "put $P1 \"Mitarbeiter Liste ü 2024.csv\"" "put $HALF \"Mitarbeiter Liste ü 2024.csv\"" \
          "get \"Mitarbeiter Liste ü 2024.csv\" $DIR/dl/names.bin" "ls -l"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "sftp -b exited $?"
    same "$HALF" "$DIR/dl/names.bin" && same "$HALF" "$HOME_DIR/Mitarbeiter Liste ü 2024.csv"
}

c_key_types() {
    # Client keys RSA and ECDSA (OpenSSH signs RSA with rsa-sha2-512), and every host key type.
    local k a
    echo pwd >"$DIR/work/batch.txt"
    for k in client_rsa client_ecdsa; do
        timeout "$T" sftp -P "$PORT" "${SSH_COMMON[@]}" -o IdentitiesOnly=yes -i "$DIR/$k" -b "$DIR/work/batch.txt" \
            "$LOGIN@127.0.0.1" || fail "login with the $k key failed (exit $?)"
    done
    for a in ssh-ed25519 rsa-sha2-256 rsa-sha2-512; do
        timeout "$T" sftp -P "$PORT" "${SSH_COMMON[@]}" -o HostKeyAlgorithms=$a -b "$DIR/work/batch.txt" \
            "$LOGIN@127.0.0.1" || fail "connecting with host key algorithm $a failed (exit $?)"
    done
    RT_KEY="$DIR/client_rsa" py paramiko_rsa_key
}

c_scp() {
    timeout "$T" scp -s -P "$PORT" "${SSH_COMMON[@]}" "$P1" "$LOGIN@127.0.0.1:scp.bin" || fail "scp upload exited $?"
    timeout "$T" scp -s -P "$PORT" "${SSH_COMMON[@]}" "$LOGIN@127.0.0.1:scp.bin" "$DIR/dl/scp.bin" || fail "scp download exited $?"
    same "$P1" "$DIR/dl/scp.bin" && same "$P1" "$HOME_DIR/scp.bin"
}

c_exit_status_repeat() {
    # sftp/scp exit 1 (though the file arrived) when the server closes the channel without
    # sending exit-status first. A race shows up only now and then, so repeat: 25 x each.
    local i bad_sftp=0 bad_scp=0
    head -c 100000 /dev/urandom >"$DIR/small.bin"
    printf '%s\n' "put $DIR/small.bin es.bin" >"$DIR/work/es.txt"
    for i in $(seq 1 25); do
        "${SFTP[@]}" -b "$DIR/work/es.txt" "$LOGIN@127.0.0.1" >/dev/null 2>&1 || bad_sftp=$((bad_sftp + 1))
        timeout "$T" scp -s -P "$PORT" "${SSH_COMMON[@]}" "$DIR/small.bin" "$LOGIN@127.0.0.1:es2.bin" 2>/dev/null || bad_scp=$((bad_scp + 1))
    done
    echo "INFO: non-zero exits: sftp -b $bad_sftp/25, scp $bad_scp/25"
    same "$DIR/small.bin" "$HOME_DIR/es.bin" && same "$DIR/small.bin" "$HOME_DIR/es2.bin"
    [ "$bad_sftp" -eq 0 ] && [ "$bad_scp" -eq 0 ] || fail "sftp -b failed $bad_sftp/25 and scp $bad_scp/25 times (files arrived)"
}

# ------------------------------------------------------------------ libraries
c_paramiko_put_get()     { py paramiko_put_get; }
c_asyncssh_1mib()        { py asyncssh_1mib; }
c_winscp_sequence()      { py winscp_sequence; }
c_filezilla_resume()     { py filezilla_resume; }
c_append_open()          { py append_open; }
c_rename_semantics()     { py rename_semantics; }

# ------------------------------------------------------------------ lftp, PuTTY psftp, curl
c_lftp() {
    local auth connect="ssh -a -x -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10"
    if [ -n "$PASSWORD" ]; then
        auth="$LOGIN,$PASSWORD"
        connect="$connect -o PubkeyAuthentication=no -o PreferredAuthentications=password"
    else
        auth="$LOGIN,"
        connect="$connect -o IdentitiesOnly=yes -i $KEY"
    fi
    echo "lftp auth: $([ -n "$PASSWORD" ] && echo password || echo key)"
    rm -f "$DIR/dl/lf.bin"
    timeout "$T" lftp -c "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 15;
        set sftp:auto-confirm yes; set sftp:connect-program '$connect';
        open -u '$auth' -p $PORT sftp://127.0.0.1;
        put $P1 -o lf.bin; ls; get lf.bin -o $DIR/dl/lf.bin" </dev/null || fail "lftp exited $?"
    same "$P1" "$DIR/dl/lf.bin" && same "$P1" "$HOME_DIR/lf.bin"
}

host_fingerprints() {            # -hostkey arguments for PuTTY, from what the server offers
    timeout 15 ssh-keyscan -p "$PORT" 127.0.0.1 2>/dev/null | ssh-keygen -lf - | awk '{print "-hostkey\n" $2}'
}

c_psftp_key() {
    [ -f "$KEY.ppk" ] || timeout 30 puttygen "$KEY" -O private -o "$KEY.ppk" || fail "puttygen could not convert the key"
    local hk; mapfile -t hk < <(host_fingerprints)
    [ "${#hk[@]}" -gt 0 ] || fail "ssh-keyscan returned no host key"
    printf '%s\n' "put $P1 ps.bin" "ls" "get ps.bin $DIR/dl/ps.bin" >"$DIR/work/psftp.txt"
    timeout "$T" psftp -batch -P "$PORT" -i "$KEY.ppk" "${hk[@]}" -b "$DIR/work/psftp.txt" \
        "$LOGIN@127.0.0.1" </dev/null || fail "psftp exited $?"
    same "$P1" "$DIR/dl/ps.bin" && same "$P1" "$HOME_DIR/ps.bin"
}

c_psftp_password() {
    [ -n "$PASSWORD" ] || skip "no password account on this target"
    local hk; mapfile -t hk < <(host_fingerprints)
    printf '%s\n' "put $HALF pspw.bin" "get pspw.bin $DIR/dl/pspw.bin" >"$DIR/work/psftp2.txt"
    timeout "$T" psftp -batch -P "$PORT" -pw "$PASSWORD" "${hk[@]}" -b "$DIR/work/psftp2.txt" \
        "$LOGIN@127.0.0.1" </dev/null || fail "psftp -pw exited $?"
    same "$HALF" "$DIR/dl/pspw.bin"
}

c_curl() {
    grep -q '^Protocols:.* sftp' <<<"$(curl -V)" || skip "this curl was built without sftp (libssh2)"
    local auth
    if [ -n "$PASSWORD" ]; then auth=(-u "$LOGIN:$PASSWORD"); else auth=(-u "$LOGIN:" --key "$KEY" --pubkey "$KEY.pub"); fi
    echo "curl auth: $([ -n "$PASSWORD" ] && echo password || echo key)"
    timeout "$T" curl -sS --fail -k "${auth[@]}" -T "$P1" "sftp://127.0.0.1:$PORT/cu.bin" || fail "curl upload exited $?"
    timeout "$T" curl -sS --fail -k "${auth[@]}" -o "$DIR/dl/cu.bin" "sftp://127.0.0.1:$PORT/cu.bin" || fail "curl download exited $?"
    same "$P1" "$DIR/dl/cu.bin"
}

c_rclone() {
    command -v rclone >/dev/null || skip "rclone is not installed"
    local remote=":sftp,host=127.0.0.1,port=$PORT,user=$LOGIN"
    if [ -n "$PASSWORD" ]; then remote="$remote,pass=$(rclone obscure "$PASSWORD")"; else remote="$remote,key_file=$KEY"; fi
    # rclone probes for md5sum/sha1sum by running commands (exec): Roster must refuse, not hang.
    local ro=(--config /dev/null --contimeout 10s --timeout 30s --retries 1 --low-level-retries 1)
    timeout "$T" rclone "${ro[@]}" copyto "$P1" "$remote:rc.bin" || fail "rclone upload exited $?"
    timeout "$T" rclone "${ro[@]}" lsl "$remote:" | grep ' rc.bin$' || fail "rclone lsl does not list rc.bin"
    timeout "$T" rclone "${ro[@]}" copyto "$remote:rc.bin" "$DIR/dl/rc.bin" || fail "rclone download exited $?"
    same "$P1" "$DIR/dl/rc.bin" && same "$P1" "$HOME_DIR/rc.bin"
    ls "$HOME_DIR" | grep -i 'partial' && fail "rclone left a partial file behind"
    return 0
}

# ------------------------------------------------------------------ refusals and the jail
c_exec_refused() {
    local rc t0=$SECONDS
    timeout 10 ssh -p "$PORT" "${SSH_COMMON[@]}" "$LOGIN@127.0.0.1" ls / </dev/null; rc=$?
    echo "ssh exec exited $rc after $((SECONDS - t0)) s"
    [ "$rc" -ne 124 ] || fail "exec request hung (killed by timeout after 10 s)"
    [ "$rc" -ne 0 ] || fail "exec request succeeded (exit 0)"
}

c_shell_refused() {
    local rc t0=$SECONDS
    timeout 10 ssh -tt -p "$PORT" "${SSH_COMMON[@]}" "$LOGIN@127.0.0.1" </dev/null; rc=$?
    echo "ssh shell exited $rc after $((SECONDS - t0)) s"
    [ "$rc" -ne 124 ] || fail "pty/shell request hung (killed by timeout after 10 s)"
    [ "$rc" -ne 0 ] || fail "shell request succeeded (exit 0)"
}

c_sftp_traversal() {
    rm -f "$DIR/dl/trav"*
    batch "cd .." "pwd" "cd ../../.." "pwd" "-get ../../etc/passwd $DIR/dl/trav1" \
          "-get /etc/passwd $DIR/dl/trav2" "-get ../../../../../../etc/shadow $DIR/dl/trav3" "-ls /.."
    local out f
    out=$("${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" 2>&1) || { echo "$out"; fail "sftp -b exited non-zero"; return 1; }
    echo "$out"
    [ "$(echo "$out" | grep -c '^Remote working directory: /$')" -eq 2 ] || fail "'cd ..' left '/'"
    for f in "$DIR/dl/trav1" "$DIR/dl/trav2"; do
        [ -f "$f" ] && cmp -s "$f" /etc/passwd && fail "downloaded the host's /etc/passwd as $f"
    done
    [ -f "$DIR/dl/trav3" ] && cmp -s "$DIR/dl/trav3" /etc/shadow && fail "downloaded the host's /etc/shadow"
    return 0
}

c_traversal_read()  { py traversal_read; }
c_traversal_write() { py traversal_write; }
c_symlink_escape()  { py symlink_escape; }

c_sftp_readonly_put() {
    [ "$TARGET" = roster ] || skip "sshd runs internal-sftp as root here; read-only folders are a Roster feature"
    mkdir -p "$HOME_DIR/processed"
    batch "put $HALF processed/ro.bin"
    local rc; "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1"; rc=$?
    [ "$rc" -ne 0 ] || fail "put into processed/ succeeded (sftp exit 0)"
    [ ! -e "$HOME_DIR/processed/ro.bin" ] || fail "processed/ro.bin exists on disk"
}

c_readonly_dirs() { py readonly_dirs; }

c_sftp_symlink_refused() {
    batch "put $HALF target.bin" "ln -s target.bin link.bin"
    local rc; "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1"; rc=$?
    [ "$rc" -ne 0 ] || fail "ln -s succeeded (sftp exit 0)"
    [ ! -L "$HOME_DIR/link.bin" ] || fail "a symlink was created on disk"
}

c_wrong_password() { py wrong_password; }
c_forwarding_refused() { py forwarding_refused; }
c_unknown_requests() { py unknown_requests_logged_once; }
c_session_limit() { py session_limit; }

c_subsystem_refused() {
    local rc t0=$SECONDS
    timeout 10 ssh -p "$PORT" "${SSH_COMMON[@]}" -s "$LOGIN@127.0.0.1" no-such-subsystem </dev/null; rc=$?
    echo "ssh -s no-such-subsystem exited $rc after $((SECONDS - t0)) s"
    [ "$rc" -ne 124 ] || fail "an unknown subsystem request hung (killed by timeout after 10 s)"
    [ "$rc" -ne 0 ] || fail "an unknown subsystem request succeeded (exit 0)"
}
c_garbage_input()  { py garbage_input; }

children_of() {                  # child pids of $1, from /proc (procps may be absent)
    local p
    for p in /proc/[0-9]*; do
        [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
    done
    return 0
}

c_kill_mid_upload() {
    local big="$DIR/big.bin" pid kids k i size
    [ -f "$big" ] || head -c $((50 * 1048576)) /dev/urandom >"$big"
    printf '%s\n' "put $big killed.bin" >"$DIR/work/kill.txt"
    # -l 4000: 4000 Kbit/s, so the 50 MB upload is still running when it is killed.
    "${SFTP[@]}" -l 4000 -b "$DIR/work/kill.txt" "$LOGIN@127.0.0.1" >/dev/null 2>&1 &
    pid=$!
    sleep 3
    batch "put $P1 during.bin" "get during.bin $DIR/dl/during.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "a second session during the slow upload failed"
    same "$P1" "$DIR/dl/during.bin" || return 1
    kill -0 "$pid" 2>/dev/null || fail "the slow upload ended before it could be killed"
    # timeout -> sftp -> ssh: kill the ssh that owns the TCP connection, and its parents.
    kids=$(children_of "$pid"); for k in $kids; do kids="$kids $(children_of "$k")"; done
    for k in $kids; do
        [ "$(cat /proc/"$k"/comm 2>/dev/null)" = ssh ] && kill -9 "$k"
    done
    for k in $kids $pid; do kill -9 "$k" 2>/dev/null; done
    wait "$pid" 2>/dev/null
    sleep 2
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server process died"
    size=$(stat -c %s "$HOME_DIR/killed.bin" 2>/dev/null || echo absent)
    echo "INFO: partial file after kill -9: killed.bin $size bytes (of $((50 * 1048576)))"
    sed 's/\x1b\[[0-9;]*m//g' "$DIR/server.log" | grep -i 'killed.bin' | tail -n 3 | sed 's/^/INFO: server log: /'
    [ "$size" != $((50 * 1048576)) ] || fail "the killed upload somehow completed"
    batch "put $P1 after.bin" "get after.bin $DIR/dl/after.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "a new session after the kill failed"
    same "$P1" "$DIR/dl/after.bin"
}

c_flood() { py flood; }

c_sftp_mkdir_rmdir() {
    batch "mkdir sub" "put $HALF sub/x.bin" "get sub/x.bin $DIR/dl/sub-x.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "mkdir/put/get exited $?"
    same "$HALF" "$DIR/dl/sub-x.bin" && same "$HALF" "$HOME_DIR/sub/x.bin"
    batch "rmdir sub"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" && fail "rmdir of a non-empty folder succeeded"
    batch "rm sub/x.bin" "rmdir sub"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "rm + rmdir exited $?"
    [ ! -e "$HOME_DIR/sub" ] || fail "sub/ still exists on disk"
}

c_sftp_many_files() {
    # 1500 entries: READDIR must page and end with EOF; OpenSSH sftp lists them all.
    mkdir -p "$HOME_DIR/many"
    (cd "$HOME_DIR/many" && seq -f 'entry-%04g.txt' 1 1500 | xargs touch)
    batch "ls -1 many"
    local out n
    out=$("${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" 2>&1) || { echo "$out" | tail; fail "ls exited non-zero"; }
    n=$(echo "$out" | grep -c 'entry-[0-9]*\.txt')
    echo "listed $n entries"
    [ "$n" -eq 1500 ] || fail "ls -1 listed $n of 1500 entries"
    rm -rf "$HOME_DIR/many"
}

c_upload_limit() {
    [ "$TARGET" = roster ] || skip "max_upload_bytes is a Roster setting"
    head -c "$LIMIT" /dev/urandom >"$DIR/at-limit.bin"
    head -c $((LIMIT + 1)) /dev/urandom >"$DIR/over-limit.bin"
    batch "put $DIR/at-limit.bin at-limit.bin" "get at-limit.bin $DIR/dl/at-limit.bin"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "an upload of exactly max_upload_bytes failed"
    same "$DIR/at-limit.bin" "$DIR/dl/at-limit.bin"
    batch "put $DIR/over-limit.bin over-limit.bin"
    local out rc
    out=$("${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" 2>&1); rc=$?
    echo "$out"
    echo "INFO: over-limit put: sftp exit $rc, says: $(echo "$out" | grep -v '^sftp>' | tr '\n' ' ')"
    [ "$rc" -ne 0 ] || fail "an upload of max_upload_bytes + 1 succeeded (sftp exit 0)"
    sleep 1
    [ ! -e "$HOME_DIR/over-limit.bin" ] || fail "the partial over-limit file was left on disk ($(stat -c %s "$HOME_DIR/over-limit.bin") bytes)"
}

c_events_in_log() {
    # Roster logs each UploadFinished event as "upload finished ... path=/NAME size=N how=...".
    [ "$TARGET" = roster ] || skip "upload events are Roster's"
    local log; log=$(sed 's/\x1b\[[0-9;]*m//g' "$DIR/server.log" | grep 'upload finished')
    echo "$log" | sed 's/^/log: /'
    [ -n "$log" ] || fail "no 'upload finished' line in the server log at all"
    grep -q 'path=/ws.bin size=3158073 how=Rename' <<<"$log" || fail "no event for the WinSCP rename onto /ws.bin"
    ! echo "$log" | grep -E 'path=\S*(\.filepart|killed\.bin|over-limit\.bin|bigpacket\.bin)' || fail "an event was announced for a temp, killed, over-limit or broken upload"
    [ "$(echo "$log" | grep -c 'path=/s1.bin ')" -eq 1 ] || fail "expected exactly one event for /s1.bin"
}

c_host_key_restart() {
    # Nightly HR jobs use strict known_hosts: the host keys must survive a restart unchanged.
    [ "$TARGET" = roster ] || skip "restarting is only exercised for Roster"
    local kh="$DIR/work/known_hosts" before after f
    timeout 15 ssh-keyscan -p "$PORT" 127.0.0.1 2>/dev/null | sort >"$kh"
    [ -s "$kh" ] || fail "ssh-keyscan got no host keys"
    for f in "$DIR"/host_keys/*; do
        case "$f" in *.pub) continue ;; esac
        [ "$(stat -c %a "$f")" = 600 ] || fail "host key $f has mode $(stat -c %a "$f"), expected 600"
    done
    stop_pid "$SERVER_PID"
    "$ROSTER_BIN" serve -c "$DIR/roster.toml" >>"$DIR/server.log" 2>&1 &
    echo "$!" >"$DIR/server.pid"
    wait_ssh_banner "$PORT" 60 || fail "the server did not come back after a restart"
    after=$(timeout 15 ssh-keyscan -p "$PORT" 127.0.0.1 2>/dev/null | sort)
    [ "$after" = "$(cat "$kh")" ] || fail "host keys changed across a restart"
    echo pwd >"$DIR/work/batch.txt"
    timeout "$T" sftp -P "$PORT" -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$kh" -o BatchMode=yes \
        -o IdentitiesOnly=yes -i "$KEY" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" || fail "strict host-key login after restart failed"
}

c_server_healthy() {
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server process is gone"
    if grep -n 'panicked' "$DIR/server.log"; then fail "the server log contains a panic"; fi
    batch "ls"
    "${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" >/dev/null || fail "final sftp session failed"
}

# ------------------------------------------------------------------ run
# Warm-up: one login, so the server has created the tenant home.
echo pwd >"$DIR/work/batch.txt"
"${SFTP[@]}" -b "$DIR/work/batch.txt" "$LOGIN@127.0.0.1" >"$DIR/logs/warmup.log" 2>&1 \
    || { echo "run.sh: warm-up key login failed:"; sed 's/^/    | /' "$DIR/logs/warmup.log"; }
c_tenant_home() { [ -d "$HOME_DIR" ] || fail "tenant home $HOME_DIR does not exist after a login"; }
run_check tenant_home c_tenant_home
mkdir -p "$HOME_DIR"

run_check sftp_put_get          c_sftp_put_get
run_check sftp_reput            c_sftp_reput
run_check sftp_rename_ls_df     c_sftp_rename_ls_df
run_check sftp_put_preserve_fsync c_sftp_put_preserve_fsync
run_check sftp_ls_longname      c_sftp_ls_longname
run_check sftp_names_overwrite  c_sftp_names_overwrite
run_check key_types             c_key_types
run_check exit_status_repeat    c_exit_status_repeat
run_check scp                   c_scp
run_check paramiko_put_get      c_paramiko_put_get
run_check asyncssh_1mib         c_asyncssh_1mib
run_check winscp_sequence       c_winscp_sequence
run_check filezilla_resume      c_filezilla_resume
run_check append_open           c_append_open
run_check rename_semantics      c_rename_semantics
run_check lftp                  c_lftp
run_check psftp_key             c_psftp_key
run_check psftp_password        c_psftp_password
run_check curl                  c_curl
run_check rclone                c_rclone
run_check exec_refused          c_exec_refused
run_check shell_refused         c_shell_refused
run_check subsystem_refused     c_subsystem_refused
run_check forwarding_refused    c_forwarding_refused
run_check unknown_requests      c_unknown_requests
run_check sftp_traversal        c_sftp_traversal
run_check traversal_read        c_traversal_read
run_check traversal_write       c_traversal_write
run_check symlink_escape        c_symlink_escape
run_check sftp_readonly_put     c_sftp_readonly_put
run_check readonly_dirs         c_readonly_dirs
run_check sftp_symlink_refused  c_sftp_symlink_refused
run_check wrong_password        c_wrong_password
run_check garbage_input         c_garbage_input
run_check session_limit         c_session_limit
run_check sftp_mkdir_rmdir      c_sftp_mkdir_rmdir
run_check sftp_many_files       c_sftp_many_files
run_check upload_limit          c_upload_limit
run_check kill_mid_upload       c_kill_mid_upload
run_check flood                 c_flood          # last but one: it may get 127.0.0.2 blocked
run_check events_in_log         c_events_in_log
run_check server_healthy        c_server_healthy
run_check host_key_restart      c_host_key_restart
# host_key_restart ran in a subshell: pick up the restarted server's pid so cleanup stops it.
if [ -f "$DIR/server.pid" ]; then SERVER_PID=$(cat "$DIR/server.pid"); fi

if [ "$FAILED" -gt 0 ]; then
    echo "server log tail ($DIR/server.log):"
    tail -n 30 "$DIR/server.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'
    echo "failed: ${FAILED_NAMES[*]}"
fi
[ "$SKIPPED" -gt 0 ] && echo "$SKIPPED skipped"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
