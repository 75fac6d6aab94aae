"""paramiko SFTPClient.get() of one file (tests/sftp_flow.rs).

    python3 get.py HOST PORT USER PASSWORD REMOTE LOCAL

get() prefetches: it sends a READ for every 32 KiB block of the file at once, then reads the
replies. Prints "seconds N.N" and exits 0 when the download finished.
"""
import sys
import time

import paramiko

host, port, user, password, remote, local = sys.argv[1:7]
t = paramiko.Transport((host, int(port)))
t.connect(username=user, password=password)
s = paramiko.SFTPClient.from_transport(t)
start = time.monotonic()
s.get(remote, local)
print("seconds %.1f" % (time.monotonic() - start), flush=True)
t.close()
