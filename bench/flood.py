#!/usr/bin/env python3
"""Flood benchmark for the SSH front door (issue 9): a connection flood and a channel flood at
once, while a legitimate key login and /health are timed and the server's RSS is watched.

    cargo build                                   # this script builds nothing
    python3 bench/flood.py                        # ROSTER_BIN, default target/debug/roster
    python3 bench/flood.py --flood 20000 --channels 20 --handles 1024 --sources 1

It starts `roster serve` on free 127.0.0.1 ports with a throwaway config and an ed25519 key
(ssh-keygen), then, at the same time:
  * the connection flood: --flood TCP connections that never say a word, from --sources loopback
    addresses (127.0.1.1, 127.0.1.2, ...), held open for the whole run (worker processes, so the
    client's own descriptor limit is not the bottleneck);
  * the channel flood: one OpenSSH master connection of the tenant (ControlMaster) carrying
    --channels `ssh -s sftp` channels, each opening --handles files with raw SFTP OPEN requests
    and holding them;
and then times --logins key logins with `sftp -b` from 127.0.0.2 (another address than the
flood), and GET /health. It prints counts, times, the server's VmRSS/VmHWM and open descriptors.
Figures only: it asserts nothing (the test suite has the small, asserting version).
"""
import argparse
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "flood-bench-token-1a2b3c4d5e6f7a8b9c0d"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def write_config(tmp, sftp_port, admin_port, pub):
    cfg = os.path.join(tmp, "roster.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{sftp_port}"
host_keys = "{tmp}/host_keys"
data_dir = "{tmp}/data"
max_sessions_per_tenant = 16

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[[tenants]]
id = "acme"
authorized_keys = ["{pub}"]

[[tenants]]
id = "beta"
authorized_keys = ["{pub}"]
""")
    return cfg


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) // 1024
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def health(admin_port):
    t = time.monotonic()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/health",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            ok = r.status == 200
    except Exception as e:  # noqa: BLE001 - a figure, not a failure
        return f"failed ({e.__class__.__name__}: {e})", time.monotonic() - t
    return ("200" if ok else "not 200"), time.monotonic() - t


def ssh_opts(key, known):
    return ["-i", key, "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={known}",
            "-o", "PreferredAuthentications=publickey", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=30"]


def key_login(port, key, known):
    """One `sftp -b` key login of tenant beta (acme is the attacker) from 127.0.0.2 doing `pwd`;
    returns (ok, seconds)."""
    t = time.monotonic()
    try:
        r = subprocess.run(["sftp", "-b", "-", "-P", str(port), "-o", "BindAddress=127.0.0.2",
                            *ssh_opts(key, known), "beta@127.0.0.1"],
                           input="pwd\n", capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - t
    return r.returncode == 0, time.monotonic() - t


# --- the connection flood -------------------------------------------------------------------

IP_BIND_ADDRESS_NO_PORT = 24   # Linux: pick the source port at connect (4-tuple), not at bind


def sweep(socks):
    """Splits sockets into those the server still holds and the number it closed."""
    kept, closed = [], 0
    for s in socks:
        try:
            data = s.recv(256)
            if data:
                kept.append(s)       # the banner: admitted
            else:
                closed += 1          # EOF: closed by the server
                s.close()
        except BlockingIOError:
            kept.append(s)           # nothing yet: still open
        except OSError:
            closed += 1              # reset by the server
            s.close()
    return kept, closed


def flood_worker(port, sources, count, ramp, hold, results):
    raise_nofile()
    socks, refused, failed, connected = [], 0, 0, 0
    stop = time.monotonic() + ramp
    for i in range(count):
        if time.monotonic() > stop:
            failed += count - i     # not even tried: the server stopped accepting
            break
        s = socket.socket()
        s.settimeout(1)
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((sources[i % len(sources)], 0))
            s.connect(("127.0.0.1", port))
            s.setblocking(False)    # so that `sweep` never waits
            socks.append(s)
            connected += 1
        except OSError:
            failed += 1
            s.close()
        if i % 256 == 255:          # let go of what the server already closed
            socks, closed = sweep(socks)
            refused += closed
    time.sleep(1)
    kept, closed = sweep(socks)
    results.put(("opened", connected, len(kept), refused + closed, failed))
    time.sleep(max(0, stop + hold - ramp - time.monotonic()))
    for s in kept:
        s.close()


# --- the channel flood ----------------------------------------------------------------------

def sftp_packet(kind, body):
    return struct.pack(">IB", len(body) + 1, kind) + body


def sftp_string(b):
    return struct.pack(">I", len(b)) + b


def read_packet(f):
    head = f.read(5)
    if len(head) < 5:
        return None, b""
    n, kind = struct.unpack(">IB", head)
    return kind, f.read(n - 1)


def channel_worker(port, key, known, ctl, handles, hold, results, index):
    """One SFTP channel on the shared master connection, opening `handles` files."""
    p = subprocess.Popen(["ssh", "-S", ctl, "-p", str(port), *ssh_opts(key, known), "-s",
                          "acme@127.0.0.1", "sftp"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    opened, refusal = 0, ""
    try:
        p.stdin.write(sftp_packet(1, struct.pack(">I", 3)))
        p.stdin.flush()
        kind, _ = read_packet(p.stdout)
        if kind != 2:
            refusal = "no SFTP session: " + p.stderr.read(300).decode(errors="replace").strip()
        else:
            # Pipeline the OPENs (one file per channel, opened again and again), then read.
            name = f"/chan{index}.txt".encode()
            for i in range(handles):
                body = struct.pack(">I", i + 1) + sftp_string(name) + struct.pack(">II", 0x0a, 0)
                p.stdin.write(sftp_packet(3, body))
            p.stdin.flush()
            for _ in range(handles):
                kind, body = read_packet(p.stdout)
                if kind == 102:
                    opened += 1
                elif kind == 101:
                    if not refusal:
                        refusal = "status " + str(struct.unpack(">I", body[4:8])[0])
                else:
                    refusal = refusal or "channel closed"
                    break
    except (OSError, ValueError) as e:
        refusal = refusal or f"{e.__class__.__name__}: {e}"
    results.put(("channel", index, opened, refusal))
    time.sleep(hold)
    p.kill()
    p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flood", type=int, default=20000, help="unauthenticated connections")
    ap.add_argument("--sources", type=int, default=8, help="flood source addresses")
    ap.add_argument("--workers", type=int, default=4, help="flood processes")
    ap.add_argument("--channels", type=int, default=20, help="SFTP channels on one connection")
    ap.add_argument("--handles", type=int, default=1024, help="handles opened per channel")
    ap.add_argument("--logins", type=int, default=5, help="timed key logins")
    ap.add_argument("--ramp", type=int, default=60,
                    help="seconds to open the floods before the logins are timed anyway")
    ap.add_argument("--hold", type=int, default=150, help="seconds the floods are held")
    args = ap.parse_args()

    binary = os.environ.get("ROSTER_BIN", os.path.join(ROOT, "target", "debug", "roster"))
    tmp = tempfile.mkdtemp(prefix="roster-flood-")
    key = os.path.join(tmp, "id_ed25519")
    known = os.path.join(tmp, "known_hosts")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    pub = open(key + ".pub").read().split()
    sftp_port, admin_port = free_port(), free_port()
    cfg = write_config(tmp, sftp_port, admin_port, f"{pub[0]} {pub[1]}")
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen([binary, "serve", "-c", cfg], stdout=log, stderr=log)
    ctl = os.path.join(tmp, "ctl")
    master = None
    procs = []
    try:
        for _ in range(100):
            if health(admin_port)[0] == "200":
                break
            time.sleep(0.2)
        base = proc_status(server.pid)
        print(f"server pid {server.pid}: at rest RSS {base.get('VmRSS')} MB, fds {base.get('fds')}")
        ok, secs = key_login(sftp_port, key, known)
        print(f"key login before the flood: {'ok' if ok else 'FAILED'} in {secs:.2f} s")

        results = multiprocessing.Queue()
        sources = [f"127.0.1.{i + 1}" for i in range(args.sources)]
        per = args.flood // args.workers
        t0 = time.monotonic()
        for w in range(args.workers):
            # Each worker its own addresses: one address cannot open 20,000 connections to one
            # port in a few seconds (its source ports run out while the closed ones sit in
            # TIME_WAIT).
            mine = sources[w::args.workers] or sources
            p = multiprocessing.Process(target=flood_worker,
                                        args=(sftp_port, mine, per, args.ramp, args.hold, results))
            p.start()
            procs.append(p)
        master = subprocess.Popen(["ssh", "-M", "-S", ctl, "-N", "-p", str(sftp_port),
                                   *ssh_opts(key, known), "acme@127.0.0.1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(ctl):
                break
            time.sleep(0.1)
        for i in range(args.channels):
            p = multiprocessing.Process(target=channel_worker,
                                        args=(sftp_port, key, known, ctl, args.handles,
                                              args.hold, results, i))
            p.start()
            procs.append(p)

        flood = [0, 0, 0, 0]
        channels = []
        peak = {}
        waiting = args.workers + args.channels
        deadline = time.monotonic() + args.ramp
        while waiting and time.monotonic() < deadline:
            try:
                r = results.get(timeout=1)
            except Exception:  # noqa: BLE001 - queue.Empty
                r = None
            now = proc_status(server.pid)
            peak["VmRSS"] = max(peak.get("VmRSS", 0), now.get("VmRSS", 0))
            peak["fds"] = max(peak.get("fds", 0), now.get("fds", 0))
            if r is None:
                continue
            waiting -= 1
            if r[0] == "opened":
                flood = [a + b for a, b in zip(flood, r[1:])]
            else:
                channels.append(r[1:])
        t_ready = time.monotonic() - t0
        if waiting:
            print(f"{waiting} flood processes had not finished opening after {args.ramp} s")
        print(f"connection flood: {flood[0]} connected of {args.flood} from {args.sources} "
              f"address(es), {flood[1]} held open by the server, {flood[2]} closed by it at once, "
              f"{flood[3]} failed or not tried ({t_ready:.1f} s)")
        handles = sum(c[1] for c in channels)
        refused = [c for c in channels if c[2]]
        print(f"channel flood: {len(channels)} channels answered, {handles} handles open, "
              f"{len(refused)} channels refused or cut short")
        for c in sorted(refused)[:3]:
            print(f"  channel {c[0]}: {c[1]} handles, then {c[2]}")

        times = []
        for _ in range(args.logins):
            times.append(key_login(sftp_port, key, known))
        good = sorted(secs for ok, secs in times if ok)
        print(f"key logins during the floods: {len(good)}/{args.logins} ok; "
              + (f"median {good[len(good) // 2]:.2f} s, max {good[-1]:.2f} s" if good else "none")
              + "; failed ones took " + ", ".join(f"{secs:.1f} s" for ok, secs in times if not ok))
        status, secs = health(admin_port)
        print(f"/health during the floods: {status} in {secs:.2f} s")
        now = proc_status(server.pid)
        print(f"server during the floods: RSS {now.get('VmRSS')} MB (peak seen {peak.get('VmRSS')} "
              f"MB, VmHWM {now.get('VmHWM')} MB), fds {now.get('fds')} (peak seen {peak.get('fds')})")
    finally:
        for p in procs:
            p.terminate()
        if master:
            master.terminate()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if os.environ.get("KEEP_TMP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise_nofile()
    sys.exit(main())
