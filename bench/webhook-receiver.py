#!/usr/bin/env python3
"""The webhook benchmark's receiver: verifies every delivery with the Standard Webhooks
reference library (PyPI `standardwebhooks`, installed by tests/webhooks/install.sh) and counts.

Usage: webhook-receiver.py SECRET PORTFILE

- Listens on 127.0.0.1 on a free port and writes the port to PORTFILE.
- POST: verified with standardwebhooks.Webhook(SECRET).verify(body, headers); a verified
  message is answered 204 and counted (messages, distinct ids, changes in `directory.changed`
  bodies, per type), a failed one is answered 400 and counted as refused. Keeps nothing else.
- GET /stats: the counts as JSON, with `first_ack` and `last_ack` (Unix seconds, float) of the
  verified messages.
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET, PORTFILE = sys.argv[1:3]
HOOK = Webhook(SECRET)
LOCK = threading.Lock()
STATS = {"messages": 0, "refused": 0, "changes": 0, "types": {}, "first_ack": None,
         "last_ack": None, "ids": 0}
IDS = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        try:
            body = HOOK.verify(raw, dict(self.headers.items()))
        except (WebhookVerificationError, ValueError):
            with LOCK:
                STATS["refused"] += 1
            self.answer(400, b"bad signature")
            return
        kind = body.get("type", "?")
        changes = len(body.get("data", {}).get("changes", [])) if kind == "directory.changed" else 0
        with LOCK:
            STATS["messages"] += 1
            STATS["changes"] += changes
            STATS["types"][kind] = STATS["types"].get(kind, 0) + 1
            IDS.add(self.headers.get("webhook-id"))
            STATS["ids"] = len(IDS)
            now = time.time()
            STATS["first_ack"] = STATS["first_ack"] or now
            STATS["last_ack"] = now
        self.answer(204, b"")

    def do_GET(self):
        with LOCK:
            text = json.dumps(STATS).encode()
        self.answer(200, text)

    def answer(self, status, text):
        self.send_response(status)
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
