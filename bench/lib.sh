# Pieces the bench scripts share; `source "$(dirname "$0")/lib.sh"` (after `cd` to the repo).
# Nothing here runs on its own.

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Core-seconds this machine's processors have spent busy since boot (user, nice, system, irq,
# softirq, steal of /proc/stat's `cpu` line): the difference around a step is the CPU work of
# everything that ran meanwhile (the importer and the PostgreSQL server's processes alike).
busy_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", ($2+$3+$4+$7+$8+$9)/hz}' /proc/stat
}

# changed_copy SRC DST: DST is SRC (a gen-users.py file) with every 100th data row's job title
# changed, the "1% changed" input. Kept when DST already exists.
changed_copy() {
    [ -f "$2" ] && return 0
    python3 - "$1" "$2" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
with open(src) as f, open(dst, "w") as o:
    for n, line in enumerate(f):
        if n > 0 and n % 100 == 0:
            parts = line.rstrip("\n").split(";")
            parts[9] = parts[9] + " (changed)"
            line = ";".join(parts) + "\n"
        o.write(line)
PY
}

# pg_throwaway DIR [SERVER OPTIONS]: a PostgreSQL cluster of its own in DIR/pg (Debian's
# initdb and pg_ctl, as `nobody` when run as root, which initdb requires; a DIR/pg left by an
# earlier run is started again as it is), listening on a free port of 127.0.0.1, with user
# `roster` trusted. Sets PG_PORT, PSQL (psql with the connection,
# stopping at the first error) and PG_STOP (the command that stops it; the caller runs it on
# exit and removes DIR).
pg_throwaway() {
    local dir="$1" options="${2:-}" pgbin
    bash tests/postgres/install.sh >/dev/null
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$pgbin" ] || pgbin=$(dirname "$(command -v initdb)")
    local as=()
    if [ "$(id -u)" -eq 0 ]; then chown nobody "$dir"; as=(runuser -u nobody --); fi
    PG_PORT=$(free_port)
    [ -d "$dir/pg" ] ||
        "${as[@]}" "$pgbin/initdb" -D "$dir/pg" -U roster --auth=trust -E UTF8 --locale=C >/dev/null
    "${as[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
        -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 $options" start >/dev/null
    PG_STOP=("${as[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -m fast stop)
    PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U roster)
}
