"""A client that stops reading replies and keeps sending requests (tests/sftp_flow.rs).

    python3 stop_reading.py HOST PORT USER PASSWORD BIG_FILE WAIT_SECS

Asks for 8 MiB of BIG_FILE in 32 KiB READs (more than paramiko's 2 MiB window, which it only
reopens as the application reads, and it never reads), then sends 32 KiB WRITE requests from
another thread until sending blocks. Then it waits, reading nothing, for the server to end the
connection. Prints "closed after N s" (exit 0) or "still open after N s" (exit 1).
"""
import sys
import threading
import time

import paramiko
from paramiko.sftp import CMD_READ, CMD_WRITE, int64

host, port, user, password, big, wait = sys.argv[1:7]
t = paramiko.Transport((host, int(port)))
t.connect(username=user, password=password)
s = paramiko.SFTPClient.from_transport(t)
source = s.open(big, "r")
sink = s.open("sink.bin", "w")
block = 32 * 1024
for i in range(256):
    s._async_request(type(None), CMD_READ, source.handle, int64(i * block), int(block))


def flood():
    data = b"w" * block
    try:
        for i in range(4096):  # 128 MiB at most; sending blocks long before
            s._async_request(type(None), CMD_WRITE, sink.handle, int64(i * block), data)
    except Exception:
        pass  # the server ended the connection


threading.Thread(target=flood, daemon=True).start()
print("requests sent; reading nothing now", flush=True)
start = time.monotonic()
while time.monotonic() - start < float(wait):
    if not t.is_active():
        print("closed after %.0f s" % (time.monotonic() - start), flush=True)
        sys.exit(0)
    time.sleep(0.2)
print("still open after %s s" % wait, flush=True)
sys.exit(1)
