#!/usr/bin/env python3
"""Library-driven interop checks (paramiko, asyncssh, raw sockets) for tests/interop/run.sh.

Usage:  clients.py CHECK_NAME        (run.sh sets the environment below)
Exit status: 0 pass, 1 fail (reason on stderr), 77 skip (reason on stdout).
Lines printed as "INFO: ..." are shown by run.sh even when the check passes.

Environment:
  RT_PORT, RT_USER, RT_PASSWORD (empty: no password auth available), RT_KEY (ed25519 private key),
  RT_WORK (local scratch dir), RT_HOME (the tenant's home on disk, i.e. the server's "/"),
  RT_FILE (test payload), RT_TARGET ("roster" or "sshd"), RT_SERVER_LOG,
  RT_FLOOD_USER / RT_FLOOD_PASSWORD (an account used only by the flood check).
"""
import asyncio
import hashlib
import os
import random
import re
import socket
import stat as pystat
import struct
import sys
import time

import paramiko
from paramiko.sftp import CMD_OPEN, CMD_HANDLE, CMD_EXTENDED, CMD_WRITE, CMD_STATUS, SFTPError
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_file import SFTPFile

HOST = "127.0.0.1"
PORT = int(os.environ.get("RT_PORT", "0"))
USER = os.environ.get("RT_USER", "acme")
PASSWORD = os.environ.get("RT_PASSWORD", "")
KEY = os.environ.get("RT_KEY", "")
WORK = os.environ.get("RT_WORK", "/tmp")
HOME = os.environ.get("RT_HOME", "")
PAYLOAD = os.environ.get("RT_FILE", "")
TARGET = os.environ.get("RT_TARGET", "roster")
SERVER_LOG = os.environ.get("RT_SERVER_LOG", "")

FLAG_READ, FLAG_WRITE, FLAG_APPEND, FLAG_CREAT, FLAG_TRUNC, FLAG_EXCL = 1, 2, 4, 8, 16, 32


class Skip(Exception):
    pass


def info(msg):
    print("INFO: " + msg, flush=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def payload():
    with open(PAYLOAD, "rb") as f:
        return f.read()


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def connect(user=USER, password=None, key=True, source=None, timeout=15):
    """An authenticated paramiko Transport. password=None and key=True: key auth."""
    sock = socket.socket()
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect((HOST, PORT))
    t = paramiko.Transport(sock)
    t.banner_timeout = timeout
    t.auth_timeout = timeout
    t.start_client(timeout=timeout)
    if password is not None:
        t.auth_password(user, password)
    else:
        t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(KEY))
    return t


def sftp_session(**kw):
    t = connect(**kw)
    s = paramiko.SFTPClient.from_transport(t)
    s.get_channel().settimeout(60)
    return t, s


def raw_open(sftp, path, flags, attrs=None):
    """SSH_FXP_OPEN with exact pflags (paramiko's open() cannot express WRITE-only)."""
    attrs = attrs or SFTPAttributes()
    t, msg = sftp._request(CMD_OPEN, path, flags, attrs)
    check(t == CMD_HANDLE, "OPEN did not return a handle")
    return SFTPFile(sftp, msg.get_binary(), "w", -1)


def remote_sha(sftp, path):
    with sftp.open(path, "rb") as f:
        f.prefetch()
        return sha(f.read())


def on_disk(name):
    return os.path.join(HOME, name)


def unlink_quiet(sftp, path):
    try:
        sftp.remove(path)
    except IOError:
        pass


# ---------------------------------------------------------------- upload/download checks

def check_paramiko_put_get():
    """put (paramiko STATs right after CLOSE to confirm), an explicit stat, get; sha256 equal."""
    auth = {"password": PASSWORD} if PASSWORD else {}
    t, s = sftp_session(**auth)
    try:
        size = os.path.getsize(PAYLOAD)
        attrs = s.put(PAYLOAD, "pm.bin", confirm=True)
        check(attrs.st_size == size, f"put returned size {attrs.st_size}, expected {size}")
        st = s.stat("pm.bin")
        check(st.st_size == size, f"stat right after put: size {st.st_size}, expected {size}")
        out = os.path.join(WORK, "pm.dl")
        s.get("pm.bin", out)
        check(sha_file(out) == sha_file(PAYLOAD), "downloaded sha256 differs from uploaded")
        check(sha_file(on_disk("pm.bin")) == sha_file(PAYLOAD), "file on server disk differs")
        info(f"paramiko auth: {'password' if PASSWORD else 'key'}, {size} bytes")
    finally:
        t.close()


def check_paramiko_rsa_key():
    """paramiko logs in with an RSA key (RT_KEY) and an SFTP request works."""
    sock = socket.create_connection((HOST, PORT), timeout=15)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=15)
        t.auth_publickey(USER, paramiko.RSAKey.from_private_key_file(KEY))
        s = paramiko.SFTPClient.from_transport(t)
        s.listdir("/")
        info(f"paramiko RSA login ok; server-sig-algs: {getattr(t, 'server_extensions', {}).get('server-sig-algs', b'(none sent)')!r}")
    finally:
        t.close()


def check_asyncssh_1mib():
    """asyncssh put/get with block_size=1 MiB (larger than most servers' packet limit)."""
    import asyncssh
    block = int(os.environ.get("RT_ASYNCSSH_BLOCK", str(1 << 20)))
    info(f"asyncssh block_size {block}")

    async def run():
        async with asyncssh.connect(HOST, PORT, username=USER, client_keys=[KEY],
                                    known_hosts=None, password=None,
                                    connect_timeout=15) as conn:
            async with conn.start_sftp_client() as sftp:
                limits = getattr(sftp, "limits", None)
                if limits is not None:
                    info(f"server limits@openssh.com: max_packet={limits.max_packet_len} "
                         f"max_read={limits.max_read_len} max_write={limits.max_write_len} "
                         f"max_open_handles={limits.max_open_handles}")
                await sftp.put(PAYLOAD, "as.bin", block_size=block)
                st = await sftp.stat("as.bin")
                check(st.size == os.path.getsize(PAYLOAD), f"stat after put: size {st.size}")
                out = os.path.join(WORK, "as.dl")
                await sftp.get("as.bin", out, block_size=block)
                check(sha_file(out) == sha_file(PAYLOAD), "downloaded sha256 differs from uploaded")

    asyncio.run(asyncio.wait_for(run(), 120))


def check_winscp_sequence():
    """WinSCP: NAME.filepart (WRITE|CREAT|TRUNC, local size in OPEN attrs), CLOSE, REMOVE NAME,
    plain RENAME .filepart -> NAME, SETSTAT mtime, STAT shows it; read back."""
    data = payload()
    name, part = "ws.bin", "ws.bin.filepart"
    t, s = sftp_session(**({"password": PASSWORD} if PASSWORD else {}))
    try:
        with s.open(name, "wb") as f:          # an older version of the target exists
            f.write(b"old contents\n")
        attrs = SFTPAttributes()
        attrs.st_size = len(data)              # WinSCP sends the local size; must be ignored
        f = raw_open(s, part, FLAG_WRITE | FLAG_CREAT | FLAG_TRUNC, attrs)
        f.set_pipelined(True)
        for off in range(0, len(data), 256 * 1024 - 1024):
            f.write(data[off:off + 256 * 1024 - 1024])
        f.close()
        s.remove(name)
        s.rename(part, name)                   # paramiko rename = plain SSH_FXP_RENAME
        mtime = 1_600_000_000
        s.utime(name, (mtime, mtime))          # path SETSTAT
        st = s.stat(name)
        check(st.st_mtime == mtime, f"stat mtime {st.st_mtime}, expected {mtime}")
        check(st.st_size == len(data), f"stat size {st.st_size}, expected {len(data)}")
        names = s.listdir("/")
        check(part not in names, f"{part} still listed after rename: {names}")
        check(remote_sha(s, name) == sha(data), "read-back sha256 differs")
        check(int(os.stat(on_disk(name)).st_mtime) == mtime, "mtime not applied on disk")
    finally:
        t.close()


def check_filezilla_resume():
    """FileZilla: upload part of a file, then open WRITE only (no TRUNC/APPEND), FSTAT for the
    size, write the rest from that offset in 16 KiB writes; sha256 equal."""
    data = payload()
    half = len(data) * 47 // 100 + 7           # deliberately not block aligned
    t, s = sftp_session()
    try:
        with s.open("fz.bin", "wb") as f:      # WRITE|CREAT|TRUNC
            f.write(data[:half])
        t.close()
        t, s = sftp_session()                  # the resume happens in a new session
        f = raw_open(s, "fz.bin", FLAG_WRITE)
        size = f.stat().st_size                # FSTAT
        check(size == half, f"FSTAT size {size}, expected {half}")
        f.seek(size)
        f.set_pipelined(True)
        for off in range(size, len(data), 16 * 1024):
            f.write(data[off:off + 16 * 1024])
        f.close()
        check(s.stat("fz.bin").st_size == len(data), "size after resume wrong")
        check(remote_sha(s, "fz.bin") == sha(data), "read-back sha256 differs after resume")
    finally:
        t.close()


def check_append_open():
    """curl/OpenSSH reput style: WRITE|APPEND|CREAT appends whatever offset the client sends."""
    t, s = sftp_session()
    try:
        with s.open("ap.txt", "wb") as f:
            f.write(b"first,")
        f = raw_open(s, "ap.txt", FLAG_WRITE | FLAG_APPEND | FLAG_CREAT)
        f.write(b"second")                     # paramiko sends offset 0: APPEND must win
        f.close()
        with s.open("ap.txt", "rb") as f:
            got = f.read()
        check(got == b"first,second", f"APPEND result {got!r}, expected b'first,second'")
        try:
            raw_open(s, "ap.txt", FLAG_WRITE | FLAG_CREAT | FLAG_EXCL).close()
            raise AssertionError("OPEN with EXCL on an existing file succeeded")
        except IOError:
            pass
    finally:
        t.close()


def check_rename_semantics():
    """Plain RENAME onto an existing file fails; posix-rename@openssh.com overwrites."""
    t, s = sftp_session()
    try:
        for n, body in (("rn-a.txt", b"A" * 100), ("rn-b.txt", b"B" * 50)):
            with s.open(n, "wb") as f:
                f.write(body)
        try:
            s.rename("rn-a.txt", "rn-b.txt")
            raise AssertionError("plain RENAME onto an existing file succeeded")
        except IOError:
            pass
        check(s.stat("rn-b.txt").st_size == 50, "target changed by the refused RENAME")
        s.posix_rename("rn-a.txt", "rn-b.txt")
        check(s.stat("rn-b.txt").st_size == 100, "posix-rename did not overwrite")
        check("rn-a.txt" not in s.listdir("/"), "posix-rename left the source behind")
    finally:
        t.close()


# ---------------------------------------------------------------- jail / negative checks

def _secret_outside():
    d = os.path.join(WORK, "outside")
    os.makedirs(d, exist_ok=True)
    secret = os.path.join(d, "secret.txt")
    with open(secret, "w") as f:
        f.write("outside the jail\n")
    return d, secret


def check_traversal_read():
    """Reading outside the jail: every attempt fails or yields something other than the target."""
    real_passwd = open("/etc/passwd", "rb").read()
    t, s = sftp_session()
    try:
        check(s.normalize("..") == "/", f"realpath('..') = {s.normalize('..')!r}")
        check(s.normalize("/../../..") == "/", f"realpath('/../../..') = {s.normalize('/../../..')!r}")
        s.chdir("..")
        check(s.getcwd() == "/", f"cwd after cd .. is {s.getcwd()!r}")
        check(sorted(s.listdir("/..")) == sorted(s.listdir("/")), "listing /.. differs from /")
        s.chdir(None)
        paths = ["../../etc/passwd", "/etc/passwd", "/../../../../etc/passwd", "..//..//etc/passwd",
                 "./../etc/passwd", "/./../etc/passwd", "//etc/passwd", "\\..\\..\\etc\\passwd",
                 b"/\xff/../../../etc/passwd", b"/..\xc0\xaf..\xc0\xafetc/passwd"]
        leaked = []
        for p in paths:
            try:
                f = raw_open(s, p, FLAG_READ)
                f.prefetch()
                got = f.read()
                f.close()
                if got == real_passwd:
                    leaked.append(p)
            except (IOError, SFTPError):
                pass
        check(not leaked, f"read the host's /etc/passwd through {leaked!r}")
        for p in ("/..", "../.."):
            names = s.listdir(p)
            check("etc" not in names or "etc" in os.listdir(HOME), f"listdir({p!r}) shows the host root: {names}")
    finally:
        t.close()


def check_traversal_write():
    """Writing/renaming/mkdir outside the jail never lands outside the tenant home."""
    tag = "escape-%d" % random.randrange(1 << 30)
    parent = os.path.dirname(HOME.rstrip("/"))
    outside = [os.path.join(parent, tag), os.path.join(os.path.dirname(parent), tag),
               os.path.join("/", tag), os.path.join("/tmp", tag)]
    t, s = sftp_session()
    try:
        for p in ("../" + tag, "/../" + tag, "..//../" + tag, "/../../../tmp/" + tag):
            try:
                with s.open(p, "wb") as f:
                    f.write(b"x")
            except IOError:
                pass
        try:
            s.mkdir("../" + tag + ".d")
        except IOError:
            pass
        with s.open("mv.txt", "wb") as f:
            f.write(b"x")
        try:
            s.rename("mv.txt", "../" + tag + ".mv")
        except IOError:
            pass
        found = [p for base in outside for p in (base, base + ".d", base + ".mv") if os.path.lexists(p)]
        for p in found:
            try:
                os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
            except OSError:
                pass
        check(not found, f"client created files outside the jail: {found}")
    finally:
        t.close()


def check_symlink_escape():
    """A symlink planted in the home by someone else (pointing outside) must not be followed out."""
    d, secret = _secret_outside()
    links = {"planted_dir": d, "planted_file": secret}
    for name, target in links.items():
        p = on_disk(name)
        if os.path.lexists(p):
            os.unlink(p)
        os.symlink(target, p)
    t, s = sftp_session()
    try:
        leaks = []
        for p in ("planted_file", "planted_dir/secret.txt"):
            try:
                with s.open(p, "rb") as f:
                    if b"outside the jail" in f.read():
                        leaks.append("read " + p)
            except IOError:
                pass
        try:
            if "secret.txt" in s.listdir("planted_dir"):
                leaks.append("listdir planted_dir")
        except IOError:
            pass
        try:
            with s.open("planted_dir/written.txt", "wb") as f:
                f.write(b"x")
        except IOError:
            pass
        if os.path.exists(os.path.join(d, "written.txt")):
            leaks.append("write planted_dir/written.txt")
            os.unlink(os.path.join(d, "written.txt"))
        try:
            s.remove("planted_dir/secret.txt")
        except IOError:
            pass
        if not os.path.exists(secret):
            leaks.append("remove planted_dir/secret.txt")
        check(not leaks, "followed a planted symlink out of the jail: " + ", ".join(leaks))
    finally:
        t.close()
        for name in links:
            try:
                os.unlink(on_disk(name))
            except OSError:
                pass


def check_readonly_dirs():
    """processed/, errors/, bak/: readable, but no write, create, remove, rename or mkdir."""
    if TARGET == "sshd":
        raise Skip("sshd runs internal-sftp as root here; read-only folders are a Roster feature")
    for d in ("processed", "errors", "bak"):
        os.makedirs(on_disk(d), exist_ok=True)
        with open(on_disk(d + "/old.csv"), "w") as f:
            f.write("email\nx@example.com\n")
    t, s = sftp_session()
    try:
        with s.open("ro-src.txt", "wb") as f:
            f.write(b"tenant data\n")
        allowed = []
        for d in ("processed", "errors", "bak"):
            ops = {
                "put new file": lambda: s.open(d + "/new.txt", "wb").close(),
                "overwrite existing": lambda: s.open(d + "/old.csv", "wb").close(),
                "append existing": lambda: raw_open(s, d + "/old.csv", FLAG_WRITE | FLAG_APPEND).close(),
                "remove": lambda: s.remove(d + "/old.csv"),
                "rename into": lambda: s.rename("ro-src.txt", d + "/moved.txt"),
                "posix-rename into": lambda: s.posix_rename("ro-src.txt", d + "/moved2.txt"),
                "rename out": lambda: s.rename(d + "/old.csv", "stolen.csv"),
                "mkdir inside": lambda: s.mkdir(d + "/sub"),
                "rmdir": lambda: s.rmdir(d),
                "rename folder": lambda: s.rename(d, d + "-renamed"),
            }
            for what, op in ops.items():
                try:
                    op()
                    allowed.append(f"{d}: {what}")
                except IOError:
                    pass
            with s.open(d + "/old.csv", "rb") as f:
                check(f.read() == b"email\nx@example.com\n", f"{d}/old.csv not readable or changed")
            check(sorted(os.listdir(on_disk(d))) == ["old.csv"], f"{d}/ on disk now holds {os.listdir(on_disk(d))}")
        check(not allowed, "read-only folders accepted: " + "; ".join(allowed))
    finally:
        t.close()


def check_forwarding_refused():
    """A tenant must not use the server as a TCP proxy: direct-tcpip (ssh -L) and tcpip-forward
    (ssh -R) are refused, and nothing connects to a listener we hold open on loopback."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    lsock.settimeout(2)
    target = lsock.getsockname()[1]
    t = connect()
    problems = []
    try:
        try:
            ch = t.open_channel("direct-tcpip", ("127.0.0.1", target), ("127.0.0.1", 40000), timeout=10)
            problems.append("direct-tcpip channel to 127.0.0.1:%d was opened" % target)
            ch.close()
        except (paramiko.ChannelException, paramiko.SSHException, EOFError):
            pass
        try:
            c, _ = lsock.accept()
            problems.append("the server connected to our loopback listener")
            c.close()
        except socket.timeout:
            pass
        try:
            port = t.request_port_forward("127.0.0.1", 0)
            problems.append(f"tcpip-forward (ssh -R) was granted on port {port}")
        except paramiko.SSHException:
            pass
        check(not problems, "; ".join(problems))
        s = paramiko.SFTPClient.from_transport(t)   # the connection itself is still fine
        s.listdir("/")
    finally:
        t.close()
        lsock.close()


def check_unknown_requests_logged_once():
    """2,000 channel requests of types nobody knows (PuTTY sends one, simple@putty..., at every
    login) are refused without a log line each; the channel still serves SFTP afterwards."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message
    t = connect()
    try:
        ch = t.open_session()
        for i in range(2000):
            m = Message()
            m.add_byte(cMSG_CHANNEL_REQUEST)
            m.add_int(ch.remote_chanid)
            m.add_string("junk-%d@interop.example" % (i % 5))
            m.add_boolean(False)
            t._send_user_message(m)
        ch.invoke_subsystem("sftp")
        s = paramiko.SFTPClient(ch)
        s.listdir("/")
        s.close()
    finally:
        t.close()
    if TARGET != "roster" or not SERVER_LOG:
        return
    with open(SERVER_LOG, errors="replace") as f:
        lines = [l for l in f if "junk-" in l]
    check(len(lines) <= 2, "%d log lines for 2,000 unknown channel requests" % len(lines))


def check_session_limit():
    """max_sessions_per_tenant (default 16): the 17th concurrent session is refused, the 16 open
    ones keep working, and a slot freed by closing one is usable again."""
    if TARGET == "sshd":
        raise Skip("max_sessions_per_tenant is a Roster setting")
    limit = int(os.environ.get("RT_MAX_SESSIONS", "16"))
    open_ = []
    try:
        for i in range(limit):
            open_.append(sftp_session())
        try:
            t, s = sftp_session()
            s.listdir("/")
            open_.append((t, s))
            raise AssertionError(f"session {limit + 1} was accepted (limit {limit})")
        except (paramiko.SSHException, OSError, EOFError) as e:
            info(f"session {limit + 1} refused: {type(e).__name__}: {e}")
        for t, s in open_:
            s.listdir("/")
        t, s = open_.pop()
        t.close()
        deadline = time.time() + 10
        while True:
            try:
                open_.append(sftp_session())
                break
            except (paramiko.SSHException, OSError, EOFError):
                check(time.time() < deadline, "a freed session slot was not reusable within 10 s")
                time.sleep(0.5)
    finally:
        for t, _ in open_:
            t.close()


def check_wrong_password():
    """Wrong password and unknown tenant are rejected (and quickly: < 10 s each)."""
    for user, pw in ((USER, "definitely-wrong-password"), ("no-such-tenant-x", "whatever")):
        t0 = time.time()
        try:
            connect(user=user, password=pw).close()
            raise AssertionError(f"login as {user!r} with a wrong password succeeded")
        except paramiko.AuthenticationException:
            pass
        dt = time.time() - t0
        check(dt < 10, f"rejecting {user!r} took {dt:.1f}s")
        info(f"{user}: rejected in {dt:.2f}s")
    if PASSWORD:
        connect(password=PASSWORD).close()      # the right password still works


def check_flood():
    """30 failed password logins from 127.0.0.2 against RT_FLOOD_USER, then: a correct key login
    for that user works or a block is logged; another tenant from 127.0.0.1 is unaffected."""
    fuser = os.environ.get("RT_FLOOD_USER", USER)
    outcomes, t_start = [], time.time()
    for i in range(30):
        if time.time() - t_start > 150:
            info(f"stopping the flood after {i} attempts (150 s budget)")
            break
        t0 = time.time()
        try:
            connect(user=fuser, password="wrong-%d" % i, source="127.0.0.2", timeout=20).close()
            outcomes.append(("ACCEPTED", time.time() - t0))
        except paramiko.AuthenticationException:
            outcomes.append(("auth-failed", time.time() - t0))
        except (paramiko.SSHException, OSError, EOFError) as e:
            outcomes.append((type(e).__name__ + ":" + str(e)[:40], time.time() - t0))
    check(all(o != "ACCEPTED" for o, _ in outcomes), "a wrong password was accepted")
    kinds = {}
    for o, _ in outcomes:
        kinds[o] = kinds.get(o, 0) + 1
    info(f"flood: {len(outcomes)} attempts in {time.time() - t_start:.1f}s; outcomes {kinds}")
    info("flood: per-attempt seconds " + " ".join(f"{dt:.2f}" for _, dt in outcomes))
    try:
        connect(user=fuser, source="127.0.0.2").close()
        key_ok = True
        info(f"flood: key login as {fuser} from 127.0.0.2 right after the flood: accepted")
    except Exception as e:  # noqa: BLE001 - any failure is a data point here
        key_ok = False
        info(f"flood: key login as {fuser} from 127.0.0.2 right after the flood: refused ({type(e).__name__}: {e})")
    logged = []
    if SERVER_LOG and os.path.exists(SERVER_LOG):
        with open(SERVER_LOG, errors="replace") as f:
            logged = [re.sub(r"\x1b\[[0-9;]*m", "", l).strip() for l in f if "block" in l.lower()]
    if logged:
        info("flood: server logged: " + logged[0][:300])
    else:
        info("flood: no line containing 'block' in the server log")
    check(key_ok or logged, "key login refused after the flood and no block was logged")
    t, s = sftp_session()                       # the main tenant from 127.0.0.1 is unaffected
    s.listdir("/")
    t.close()


def check_garbage_input():
    """Junk instead of SSH, a huge packet length, and a bad SFTP packet: the server closes those
    connections (or answers with an error) and keeps serving a healthy session."""
    t_ok, s_ok = sftp_session()                 # a healthy session open throughout
    try:
        for label, blob in (("junk", os.urandom(4096)),
                            ("banner+junk", b"SSH-2.0-junk\r\n" + os.urandom(65536)),
                            ("banner+huge length", b"SSH-2.0-junk\r\n" + struct.pack(">I", 0xFFFFFFF0) + b"\x00" * 64)):
            with socket.create_connection((HOST, PORT), timeout=10) as c:
                c.settimeout(10)
                try:
                    c.sendall(blob)
                    while c.recv(65536):
                        pass
                except (ConnectionResetError, BrokenPipeError):
                    pass
                except socket.timeout:
                    raise AssertionError(f"{label}: server kept the connection open for 10 s")
        # Inside an authenticated SFTP channel: an unknown extension must get a status, and a
        # complete 4 MiB WRITE packet (over every advertised limit) must get a status reply
        # (the session stays usable) or close that session only.
        t, s = sftp_session()
        try:
            s._request(CMD_EXTENDED, "no-such-extension@example.com")
            raise AssertionError("unknown extension request got a non-error reply")
        except IOError:
            pass
        s.listdir("/")                          # the session survives the unknown extension
        f = s.open("bigpacket.bin", "wb")
        chan = s.get_channel()
        size = 4 << 20
        body = (bytes([CMD_WRITE]) + struct.pack(">I", 0x7777) + struct.pack(">I", len(f.handle))
                + f.handle + struct.pack(">QI", 0, size) + os.urandom(size))
        try:
            chan.sendall(struct.pack(">I", len(body)) + body)
            reply = _read_packet(chan, 20)
        except OSError:                         # closed while we were still sending
            reply = None
        if reply is None:
            info("4 MiB WRITE packet: the server closed the session")
        else:
            rtype, rid = reply[0], struct.unpack(">I", reply[1:5])[0]
            check(rtype == CMD_STATUS and rid == 0x7777, f"4 MiB WRITE: unexpected reply type {rtype} id {rid:#x}")
            code = struct.unpack(">I", reply[5:9])[0]
            msg = reply[13:13 + struct.unpack(">I", reply[9:13])[0]].decode(errors="replace")
            info(f"4 MiB WRITE packet: status {code} {msg!r}")
            if code == 0:
                check(os.path.getsize(on_disk("bigpacket.bin")) == size, "WRITE answered OK but the data is not there")
            s.listdir("/")                      # still in sync after the big packet
        t.close()
        s_ok.listdir("/")                       # the other session is unaffected
        t2, s2 = sftp_session()
        s2.listdir("/")
        t2.close()
    finally:
        t_ok.close()


def _read_packet(chan, secs):
    """One raw SFTP packet body from chan, or None if the channel closes or nothing comes."""
    chan.settimeout(secs)
    buf = b""
    try:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            d = chan.recv(1 << 16)
            if not d:
                return None
            buf += d
    except socket.timeout:
        raise AssertionError(f"no reply and no close within {secs} s")
    return buf[4:4 + struct.unpack(">I", buf[:4])[0]]


CHECKS = {n[len("check_"):]: f for n, f in globals().items() if n.startswith("check_")}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit("usage: clients.py {" + "|".join(sorted(CHECKS)) + "}")
    try:
        CHECKS[sys.argv[1]]()
    except Skip as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    except AssertionError as e:
        print(f"assertion failed: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - report any client error as a failure
        import traceback
        traceback.print_exc()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
