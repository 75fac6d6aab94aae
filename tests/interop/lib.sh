# Shared shell helpers for tests/interop/run.sh and bench/sftp-throughput.sh.
# Source it; it defines functions only and has no side effects.
#
#   free_port                 print a free TCP port on 127.0.0.1
#   wait_ssh_banner PORT SECS wait until 127.0.0.1:PORT answers with an "SSH-" banner
#   make_client_key FILE      create an ed25519 key pair FILE / FILE.pub (no passphrase)
#   hash_password PW          print an argon2id PHC string (roster hash-password, else python argon2)
#   write_roster_config ...   write a Roster config (see the function)
#   write_sshd_config ...     write a throwaway OpenSSH sshd config (see the function)
#   stop_pid PID              SIGTERM, wait up to 10 s, then SIGKILL

free_port() {
    "${PYTHON:-python3}" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Succeeds once a TCP connect to 127.0.0.1:$1 returns an SSH identification line.
wait_ssh_banner() {
    local port=$1 secs=${2:-30}
    "${PYTHON:-python3}" - "$port" "$secs" <<'PY'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
deadline = time.time() + secs
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            if s.recv(256).startswith(b"SSH-"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

make_client_key() {
    rm -f "$1" "$1.pub"
    ssh-keygen -q -t ed25519 -N '' -C "roster-interop" -f "$1"
}

# Prefer Roster's own command; fall back to argon2-cffi (same PHC format).
hash_password() {
    local pw=$1 out=""
    if [ -n "${ROSTER_BIN:-}" ] && [ -x "$ROSTER_BIN" ]; then
        out=$(printf '%s' "$pw" | timeout 20 "$ROSTER_BIN" hash-password 2>/dev/null | tail -n1 || true)
    fi
    case "$out" in
        '$argon2id$'*) printf '%s\n' "$out" ;;
        *) "${PYTHON:-python3}" -c 'import sys, argon2; print(argon2.PasswordHasher().hash(sys.argv[1]))' "$pw" ;;
    esac
}

# write_roster_config FILE DIR SFTP_PORT ADMIN_PORT  then lines "ID|PASSWORD_HASH|PUBKEY_LINE" on stdin
# PUBKEY_LINE may hold several keys separated by ";". $MAX_UPLOAD_BYTES overrides the 200 MB limit.
write_roster_config() {
    local file=$1 dir=$2 port=$3 admin_port=$4 id hash key
    {
        echo "# written by roster interop/bench scripts; throwaway"
        echo "[server]"
        echo "listen = \"127.0.0.1:$port\""
        echo "host_keys = \"$dir/host_keys\""
        echo "data_dir = \"$dir/data\""
        echo "max_upload_bytes = ${MAX_UPLOAD_BYTES:-209715200}"
        echo
        echo "[admin]"
        echo "listen = \"127.0.0.1:$admin_port\""
        echo "token = \"interop-admin-token-4f8a2c6e0b9d3f7a1c5e\""
        while IFS='|' read -r id hash key; do
            [ -n "$id" ] || continue
            echo
            echo "[[tenants]]"
            echo "id = \"$id\""
            echo "password_hash = '$hash'"
            echo "authorized_keys = [\"${key//;/\", \"}\"]"
            echo
            echo "[tenants.import]"
            echo "file = \"users.csv\""
        done
    } >"$file"
}

# write_sshd_config FILE DIR PORT AUTHORIZED_KEYS_FILE [CHROOT_DIR]
# A root-login, loopback-only sshd with internal-sftp; its own host key in DIR.
# With CHROOT_DIR, root is jailed there (Roster-like view of "/") and symlink creation is denied.
write_sshd_config() {
    local file=$1 dir=$2 port=$3 akeys=$4 chroot=${5:-}
    [ -f "$dir/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_ed25519_key"
    [ -f "$dir/ssh_host_rsa_key" ] || ssh-keygen -q -t rsa -b 3072 -N '' -f "$dir/ssh_host_rsa_key"
    mkdir -p /run/sshd
    {
        echo "Port $port"
        echo "ListenAddress 127.0.0.1"
        echo "HostKey $dir/ssh_host_ed25519_key"
        echo "HostKey $dir/ssh_host_rsa_key"
        echo "PidFile $dir/sshd.pid"
        echo "AuthorizedKeysFile $akeys"
        echo "StrictModes no"
        echo "PermitRootLogin yes"
        echo "PubkeyAuthentication yes"
        echo "PasswordAuthentication yes"
        echo "KbdInteractiveAuthentication no"
        echo "UsePAM no"
        echo "MaxStartups 200:30:300"
        echo "MaxSessions 100"
        echo "DisableForwarding yes"
        echo "LogLevel INFO"
        if [ -n "$chroot" ]; then
            echo "Subsystem sftp internal-sftp -d / -P symlink"
            echo "ChrootDirectory $chroot"
        else
            echo "Subsystem sftp internal-sftp"
        fi
    } >"$file"
}

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}
