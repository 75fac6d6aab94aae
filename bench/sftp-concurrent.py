#!/usr/bin/env python3
"""Concurrency benchmark: N simultaneous SFTP sessions, each uploading M small files.

    cargo build --release                      # this script builds nothing
    python3 bench/sftp-concurrent.py           # Roster (ROSTER_BIN, default target/release/roster)
    python3 bench/sftp-concurrent.py --target sshd     # OpenSSH sshd + internal-sftp, as root
    python3 bench/sftp-concurrent.py --sessions 100 --files 10 --tenants 10 --auth key

It starts the server itself on a free 127.0.0.1 port with a throwaway config and key (via
tests/interop/lib.sh), opens all sessions at once (paramiko, one thread per session, all released
by one barrier), and in each session uploads the files, STATs each one, and afterwards compares
every file on the server's disk with what was sent (sha256). Prints the failures (expected: 0),
the time until every session had logged in, and the total time. Figures only; exit 1 on failures.
"""
import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paramiko

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "tests", "interop", "lib.sh")


def lib(cmd, *args, stdin=None):
    """Run a function from tests/interop/lib.sh and return its stdout."""
    script = f'. "{LIB}"; {cmd} "$@"'
    return subprocess.run(["bash", "-c", script, "lib", *args], input=stdin, text=True,
                          check=True, capture_output=True, timeout=120).stdout.strip()


def start_server(args, tmp, key):
    port = int(lib("free_port"))
    log = open(os.path.join(tmp, "server.log"), "w")
    if args.target == "roster":
        pw = "bench-pw"
        phc = lib("hash_password", pw)
        pub = open(key + ".pub").read().strip()
        lines = "".join(f"t{i:02d}|{phc}|{pub}\n" for i in range(args.tenants))
        cfg = os.path.join(tmp, "roster.toml")
        lib("write_roster_config", cfg, tmp, str(port), lib("free_port"), stdin=lines)
        # Allow every bench session even if all land on one tenant, and all of them logging in at
        # once from 127.0.0.1 (the default of 32 connections per address before login would
        # push the oldest out: "Error reading SSH protocol banner").
        caps = "max_sessions_per_tenant = %d\nmax_unauthenticated_per_address = %d\n\n[admin]" % (
            args.sessions + 16, args.sessions + 16)
        with open(cfg) as f:
            text = f.read().replace("[admin]", caps, 1)
        with open(cfg, "w") as f:
            f.write(text)
        os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
        proc = subprocess.Popen([args.roster_bin, "serve", "-c", cfg], stdout=log, stderr=log)
        users = [(f"t{i:02d}", os.path.join(tmp, "data", "tenants", f"t{i:02d}"), "") for i in range(args.tenants)]
        password = pw
    else:
        sdir = os.path.join(tmp, "sshd")
        os.makedirs(sdir)
        shutil.copy(key + ".pub", os.path.join(sdir, "authorized_keys"))
        lib("write_sshd_config", os.path.join(sdir, "sshd_config"), sdir, str(port),
            os.path.join(sdir, "authorized_keys"))
        proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(sdir, "sshd_config")],
                                stdout=log, stderr=log)
        up = os.path.join(tmp, "up")
        os.makedirs(up)
        users = [("root", up, up + "/")]      # (login, directory on disk, remote prefix)
        password = None
    if subprocess.run(["bash", "-c", f'. "{LIB}"; wait_ssh_banner {port} 60']).returncode != 0:
        proc.kill()
        sys.exit(f"{args.target} did not start; see {log.name}")
    return proc, port, users, password


def session(i, args, port, users, password, key, payloads, barrier, results):
    login, _, prefix = users[i % len(users)]
    t = None
    try:
        barrier.wait(timeout=60)
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        t = paramiko.Transport(sock)
        t.banner_timeout = t.auth_timeout = 60
        t.start_client(timeout=60)
        if args.auth == "password" and password:
            t.auth_password(login, password)
        else:
            t.auth_publickey(login, paramiko.Ed25519Key.from_private_key_file(key))
        results[i]["login"] = time.monotonic()
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.get_channel().settimeout(60)
        for j, data in enumerate(payloads[i]):
            name = f"{prefix}s{i:03d}-f{j:02d}.dat"
            with sftp.open(name, "wb") as f:
                f.write(data)
            size = sftp.stat(name).st_size
            if size != len(data):
                raise AssertionError(f"{name}: stat size {size}, sent {len(data)}")
        sftp.close()
        results[i]["ok"] = True
    except Exception as e:  # noqa: BLE001 - every failure is counted and shown
        results[i]["error"] = f"{type(e).__name__}: {e}"
    finally:
        if t is not None:
            t.close()
        results[i]["end"] = time.monotonic()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["roster", "sshd"], default="roster")
    ap.add_argument("--roster-bin", default=os.environ.get("ROSTER_BIN", os.path.join(ROOT, "target", "release", "roster")))
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--tenants", type=int, default=10, help="Roster: spread sessions over this many tenants")
    ap.add_argument("--auth", choices=["key", "password"], default="key")
    ap.add_argument("--min-size", type=int, default=1024)
    ap.add_argument("--max-size", type=int, default=64 * 1024)
    args = ap.parse_args()
    if args.target == "roster" and not os.access(args.roster_bin, os.X_OK):
        sys.exit(f"no roster binary at {args.roster_bin} (cargo build --release, or --roster-bin)")

    tmp = tempfile.mkdtemp(prefix="roster-conc.")
    key = os.path.join(tmp, "client_key")
    lib("make_client_key", key)
    proc, port, users, password = start_server(args, tmp, key)
    try:
        rnd = __import__("random").Random(42)
        payloads = [[os.urandom(rnd.randint(args.min_size, args.max_size)) for _ in range(args.files)]
                    for _ in range(args.sessions)]
        results = [{} for _ in range(args.sessions)]
        barrier = threading.Barrier(args.sessions + 1)
        threads = [threading.Thread(target=session, daemon=True,
                                    args=(i, args, port, users, password, key, payloads, barrier, results))
                   for i in range(args.sessions)]
        for th in threads:
            th.start()
        barrier.wait(timeout=60)
        start = time.monotonic()
        for th in threads:
            th.join(timeout=max(1, 300 - (time.monotonic() - start)))
        total = time.monotonic() - start

        failures = [f"session {i}: {r.get('error', 'did not finish in 300 s')}"
                    for i, r in enumerate(results) if not r.get("ok")]
        # Verify what arrived on disk, byte for byte.
        for i in range(args.sessions):
            if not results[i].get("ok"):
                continue
            _, disk, _ = users[i % len(users)]
            for j, data in enumerate(payloads[i]):
                p = os.path.join(disk, f"s{i:03d}-f{j:02d}.dat")
                try:
                    with open(p, "rb") as f:
                        if hashlib.sha256(f.read()).digest() != hashlib.sha256(data).digest():
                            failures.append(f"session {i}: {p} differs on disk")
                except OSError as e:
                    failures.append(f"session {i}: {p}: {e}")
        logins = [r["login"] - start for r in results if "login" in r]
        nbytes = sum(len(d) for p in payloads for d in p)
        print(f"target {args.target}: {args.sessions} sessions x {args.files} files "
              f"({nbytes / 1e6:.1f} MB, {args.auth} auth"
              + (f", {args.tenants} tenants" if args.target == "roster" else "") + ")")
        if logins:
            print(f"all logged in after {max(logins):.2f}s (median {sorted(logins)[len(logins) // 2]:.2f}s)")
        print(f"failures: {len(failures)}")
        for f in failures[:20]:
            print("  " + f)
        print(f"total time: {total:.2f}s")
        if proc.poll() is not None:
            print(f"server exited during the run with status {proc.returncode}")
            failures.append("server exited")
        return 1 if failures else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
