#!/usr/bin/env python3
"""Intake burst benchmark (issue 4, "Speed"): 50 tenants upload a 10,000-row file at the same moment.

    cargo build --release                      # this script builds nothing
    python3 bench/intake-burst.py              # ROSTER_BIN, default target/release/roster
    python3 bench/intake-burst.py --settle-ms 200      # show the settle time's share
    python3 bench/intake-burst.py --tenants 50 --rows 10000 --timeout 120 --keep

It writes a throwaway config in a temp dir (tenants t00..t49, key auth with one generated ed25519
key, SFTP and admin API on free 127.0.0.1 ports, host keys and data_dir in the temp dir, an import
mapping for the columns of ../shared/bench/gen-users.py and reference lists for its org units and
locations), generates ONE users file with gen-users.py (it always uses seed 1) and uploads that same
content for every tenant (each tenant has its own store, so each run inserts all rows).

It starts `roster serve`, opens all SFTP connections (asyncssh) and logs them in first, then
releases all `put users.csv` at the same moment. For each tenant it takes the time at which its
put returned (the upload's CLOSE answered: "last byte uploaded") and the time at which the archived
file data/tenants/<id>/processed/users.*.csv appeared (file system polled every ~10 ms). The file is
archived right after the run's commit, so this latency covers settle + queue + import + commit +
filing: a slight over-estimate of "history record written". The history record of each tenant is
then read from the admin API to check status/rows/sha256 and to split the latency (record
started_at/finished_at against the client's clock at CLOSE; same machine, same clock).

Prints imported N/T, latency min/median/p90/worst, total wall time (first put started -> last
archive seen), the server's peak RSS (VmHWM) and the settle_ms used, plus any WARN/ERROR lines of
the server log. Exit 1 if not every tenant was imported successfully within --timeout.
Loopback only; the temp dir is removed afterwards unless --keep.
"""
import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime

import asyncssh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_USERS = os.path.join(os.path.dirname(ROOT), "shared", "bench", "gen-users.py")
DEFAULT_SETTLE_MS = 1500          # README.md, [server] settle_ms
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123"

# gen-users.py header -> Roster field (design.md §4)
COLUMNS = {
    "mapping_code": "id",
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "date_of_birth": "date_of_birth",
    "sex": "sex",
    "language": "language",
    "org_unit": "org_unit",
    "location": "location",
    "job_title": "job_title",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ssh_banner(port, secs, proc):
    """True once 127.0.0.1:port answers with an SSH identification line."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(3)
                if s.recv(256).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def write_config(path, tmp, port, admin_port, tenants, pubkey, settle_ms):
    q = json.dumps        # a JSON string is a valid TOML basic string
    lines = [
        "# written by bench/intake-burst.py; throwaway",
        "[server]",
        f"listen = {q(f'127.0.0.1:{port}')}",
        f"host_keys = {q(os.path.join(tmp, 'host_keys'))}",
        f"data_dir = {q(os.path.join(tmp, 'data'))}",
    ]
    if settle_ms is not None:
        lines.append(f"settle_ms = {settle_ms}")
    lines += ["", "[admin]", f"listen = {q(f'127.0.0.1:{admin_port}')}", f"token = {q(ADMIN_TOKEN)}"]
    for t in tenants:
        lines += ["", "[[tenants]]", f"id = {q(t)}", f"authorized_keys = [{q(pubkey)}]",
                  "", "[tenants.import]", 'file = "users.csv"', 'match_by = "email"',
                  "", "[tenants.import.columns]"]
        lines += [f"{field} = {q(header)}" for field, header in COLUMNS.items()]
        lines += ["", "[tenants.reference]",
                  "org_units = [" + ", ".join(q(f"OU{i}") for i in range(50)) + "]",
                  "locations = [" + ", ".join(q(f"LOC{i}") for i in range(20)) + "]"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def proc_status(pid, key):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) in MiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def poll_archives(data_dir, tenants, seen, failed, stop, interval):
    """Thread: record time.monotonic() when processed/users.*.csv (or errors/users.*) appears."""
    pat = re.compile(r"^users\.\d{8}T\d{6}Z(-\d+)?\.csv$")
    pending = set(tenants)
    while pending and not stop.is_set():
        for t in list(pending):
            home = os.path.join(data_dir, "tenants", t)
            for sub, into in (("processed", seen), ("errors", failed)):
                try:
                    names = os.listdir(os.path.join(home, sub))
                except OSError:
                    continue
                hit = [n for n in names if pat.match(n)]
                if hit:
                    into[t] = (time.monotonic(), os.path.join(home, sub, hit[0]))
                    pending.discard(t)
                    break
        stop.wait(interval)


async def connect_all(port, tenants, key, timeout):
    async def one(t):
        conn = await asyncio.wait_for(asyncssh.connect(
            "127.0.0.1", port, username=t, client_keys=[key], known_hosts=None,
            agent_path=None, preferred_auth="publickey"), timeout)
        sftp = await asyncio.wait_for(conn.start_sftp_client(), timeout)
        return conn, sftp
    return await asyncio.gather(*(one(t) for t in tenants))


async def upload_all(sessions, tenants, local, results, timeout):
    go = asyncio.Event()

    async def one(t, sftp):
        await go.wait()
        results[t]["put_start"] = time.monotonic()
        try:
            await asyncio.wait_for(sftp.put(local, "users.csv"), timeout)
            results[t]["closed"] = time.monotonic()      # put returns once CLOSE was answered
            results[t]["closed_wall"] = time.time()
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            results[t]["error"] = f"{type(e).__name__}: {e}"

    tasks = [asyncio.create_task(one(t, s[1])) for t, s in zip(tenants, sessions)]
    await asyncio.sleep(0.05)              # let every task reach go.wait()
    start = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    return start


async def close_all(sessions):
    for conn, sftp in sessions:
        sftp.exit()
        conn.close()
    await asyncio.gather(*(asyncio.wait_for(c.wait_closed(), 10) for c, _ in sessions),
                         return_exceptions=True)


def admin_history(admin_port, tenant):
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/api/tenants/{tenant}/imports?limit=5",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def summary(xs):
    xs = sorted(xs)
    if not xs:
        return "n/a"
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return (f"min {xs[0]:.2f}s  median {statistics.median(xs):.2f}s  p90 {p90:.2f}s  "
            f"worst {xs[-1]:.2f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roster-bin", default=os.environ.get("ROSTER_BIN", os.path.join(ROOT, "target", "release", "roster")))
    ap.add_argument("--tenants", type=int, default=50)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--settle-ms", type=int, default=None,
                    help=f"write [server] settle_ms (default: not set, the server's {DEFAULT_SETTLE_MS} ms)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds from the burst until every record")
    ap.add_argument("--poll-ms", type=float, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, data, server.log)")
    args = ap.parse_args()
    if not os.access(args.roster_bin, os.X_OK):
        sys.exit(f"no roster binary at {args.roster_bin} (cargo build --release, or --roster-bin)")
    if not 1 <= args.tenants <= 100:
        sys.exit("--tenants must be 1..100")

    tmp = tempfile.mkdtemp(prefix="roster-burst.")
    tenants = [f"t{i:02d}" for i in range(args.tenants)]
    key_path = os.path.join(tmp, "client_key")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="roster-bench")
    key.write_private_key(key_path)
    pubkey = key.export_public_key().decode().strip()

    local = os.path.join(tmp, "users.csv")
    subprocess.run([sys.executable, GEN_USERS, str(args.rows), local], check=True, timeout=120)
    with open(local, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    size = os.path.getsize(local)

    port, admin_port = free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    cfg = os.path.join(tmp, "roster.toml")
    write_config(cfg, tmp, port, admin_port, tenants, pubkey, args.settle_ms)
    os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
    chk = subprocess.run([args.roster_bin, "check-config", "-c", cfg], capture_output=True, text=True, timeout=60)
    if chk.returncode != 0:
        sys.exit(f"roster check-config failed:\n{chk.stdout}{chk.stderr}")

    log_path = os.path.join(tmp, "server.log")
    log = open(log_path, "w")
    env = dict(os.environ)
    env.setdefault("ROSTER_LOG", "info")
    proc = subprocess.Popen([args.roster_bin, "serve", "-c", cfg], stdout=log, stderr=log, env=env, cwd=tmp)
    stop = threading.Event()
    failures = []
    try:
        if not wait_ssh_banner(port, 60, proc):
            sys.exit(f"roster did not start; see {log_path}" + (" (kept)" if args.keep else ""))
        rss_idle = proc_status(proc.pid, "VmRSS")

        results = {t: {} for t in tenants}
        seen, failed = {}, {}
        loop = asyncio.new_event_loop()
        try:
            sessions = loop.run_until_complete(connect_all(port, tenants, key, 60))
            poller = threading.Thread(target=poll_archives, daemon=True,
                                      args=(os.path.join(tmp, "data"), tenants, seen, failed, stop,
                                            args.poll_ms / 1000))
            poller.start()
            start = loop.run_until_complete(upload_all(sessions, tenants, local, results, 60))
            uploaded = time.monotonic()
            loop.run_until_complete(close_all(sessions))
        finally:
            loop.close()

        # Wait (bounded) for every tenant's archived file.
        deadline = start + args.timeout
        while poller.is_alive() and time.monotonic() < deadline and proc.poll() is None:
            poller.join(timeout=0.1)
        stop.set()
        poller.join(timeout=5)

        # History records (admin API): status, rows, bytes; split of the latency.
        records = {}
        for t in tenants:
            try:
                recs = admin_history(admin_port, t)
                records[t] = recs[0] if recs else None
                if len(recs) != 1:
                    failures.append(f"{t}: {len(recs)} history records (expected 1)")
            except Exception as e:  # noqa: BLE001
                failures.append(f"{t}: admin API: {type(e).__name__}: {e}")
        rss_peak = proc_status(proc.pid, "VmHWM")
        rss_end = proc_status(proc.pid, "VmRSS")

        lat, started, ran, rec_lat = [], [], [], []
        for t in tenants:
            r = results[t]
            if "error" in r:
                failures.append(f"{t}: upload failed: {r['error']}")
                continue
            if t in failed:
                failures.append(f"{t}: filed into errors/: {os.path.basename(failed[t][1])}")
            if t not in seen:
                if t not in failed:
                    failures.append(f"{t}: no archived file within {args.timeout:.0f}s")
                continue
            rec = records.get(t)
            if not rec:
                failures.append(f"{t}: archived but no history record")
                continue
            bad = []
            if rec.get("status") != "success":
                bad.append(f"status {rec.get('status')}")
            if rec.get("rows") != args.rows or rec.get("inserted") != args.rows:
                bad.append(f"rows {rec.get('rows')} inserted {rec.get('inserted')}")
            if rec.get("sha256") != digest:
                bad.append("sha256 differs from the upload")
            if bad:
                failures.append(f"{t}: " + ", ".join(bad) + f"; messages: {rec.get('messages')}")
                continue
            lat.append(seen[t][0] - r["closed"])
            started.append(ts(rec["started_at"]) - r["closed_wall"])
            ran.append(ts(rec["finished_at"]) - ts(rec["started_at"]))
            rec_lat.append(ts(rec["finished_at"]) - r["closed_wall"])

        closes = [r["closed"] - start for r in results.values() if "closed" in r]
        last_seen = max((v[0] for v in seen.values()), default=None)
        settle = args.settle_ms if args.settle_ms is not None else DEFAULT_SETTLE_MS
        print(f"roster intake burst: {args.tenants} tenants x {args.rows} rows "
              f"({size / 1e6:.2f} MB each, same content for every tenant), cores: {os.cpu_count()}, "
              f"load avg at end: {os.getloadavg()[0]:.1f}")
        print(f"settle_ms: {settle}" + (" (server default)" if args.settle_ms is None else " (--settle-ms)"))
        print(f"imported: {len(lat)}/{args.tenants}")
        if closes:
            print(f"uploads: all {len(closes)} CLOSEs answered {max(closes):.2f}s after the burst "
                  f"(first {min(closes):.2f}s); connections closed {uploaded - start:.2f}s")
        print("latency, last byte uploaded (CLOSE answered) -> archived file seen in processed/")
        print("  (measures settle + queue + import + commit + filing: a slight over-estimate of the record):")
        print(f"  {summary(lat)}")
        print(f"  per the history record (finished_at - CLOSE): {summary(rec_lat)}")
        print(f"  of which CLOSE -> run started (settle + queue): {summary(started)}")
        print(f"  of which run started -> finished (import):      {summary(ran)}")
        if last_seen is not None:
            print(f"total wall time, first put started -> last archived file: {last_seen - start:.2f}s")
        mib = lambda v: "n/a" if v is None else f"{v:.1f} MiB"  # noqa: E731
        print(f"server RSS: peak (VmHWM) {mib(rss_peak)}; idle before the burst {mib(rss_idle)}; "
              f"at the end {mib(rss_end)}")
        if proc.poll() is not None:
            failures.append(f"server exited during the run with status {proc.returncode}")
        print(f"failures: {len(failures)}")
        for f in failures[:20]:
            print("  " + f)
        return 1 if failures or len(lat) != args.tenants else 0
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print("server did not stop within 30 s of SIGTERM; killed")
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        with open(log_path, errors="replace") as f:
            noisy = [l.rstrip() for l in f if re.search(r"\b(WARN|ERROR)\b|panicked", l)]
        print(f"server log: {len(noisy)} WARN/ERROR lines" + (":" if noisy else ""))
        for l in noisy[:30]:
            print("  " + l)
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
