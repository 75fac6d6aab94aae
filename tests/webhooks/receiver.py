#!/usr/bin/env python3
"""A webhook receiver for Roster's tests: verifies every delivery with the Standard Webhooks
reference library (PyPI `standardwebhooks`) and records it.

Usage: receiver.py SECRET LOG CONTROL PORTFILE

- Listens on 127.0.0.1 on a free port and writes the port to PORTFILE.
- Each POST is verified with standardwebhooks.Webhook(SECRET).verify(body, headers) and appended
  to LOG as one JSON line: {"id", "timestamp", "signature", "verified", "error", "status",
  "body"}.
- What it answers comes from CONTROL, read on each request: a comma-separated list of answers,
  the first of which is used and removed (an empty file or a missing one: 200). Answers:
  Each arrival is also appended to LOG.arrivals (its id) before answering.
  `200`, `500`, `410`, `429:SECS` (Retry-After in seconds), `429date:SECS` (Retry-After as an
  HTTP date SECS from now), `sleep:SECS` (wait, then 200). A delivery that fails verification
  is answered 400 whatever CONTROL says.
"""
import email.utils
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET, LOG, CONTROL, PORTFILE = sys.argv[1:5]
HOOK = Webhook(SECRET)


def next_answer():
    try:
        with open(CONTROL) as f:
            items = [x.strip() for x in f.read().split(",") if x.strip()]
    except FileNotFoundError:
        items = []
    if not items:
        return "200"
    with open(CONTROL + ".tmp", "w") as f:
        f.write(",".join(items[1:]))
    os.replace(CONTROL + ".tmp", CONTROL)
    return items[0]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        with open(LOG + ".arrivals", "a") as f:
            f.write((headers.get("webhook-id") or headers.get("Webhook-Id") or "") + "\n")
        verified, error, body = True, None, None
        try:
            body = HOOK.verify(raw, headers)
        except (WebhookVerificationError, ValueError) as e:
            verified, error = False, str(e)
        answer = next_answer() if verified else "400"
        extra = {}
        if answer.startswith("sleep:"):
            time.sleep(float(answer.split(":")[1]))
            answer = "200"
        elif answer.startswith("429date:"):
            at = time.time() + float(answer.split(":")[1])
            extra["Retry-After"] = email.utils.formatdate(at, usegmt=True)
            answer = "429"
        elif answer.startswith("429:"):
            extra["Retry-After"] = answer.split(":")[1]
            answer = "429"
        status = int(answer)
        with open(LOG, "a") as f:
            f.write(json.dumps({
                "id": headers.get("webhook-id") or headers.get("Webhook-Id"),
                "timestamp": headers.get("webhook-timestamp") or headers.get("Webhook-Timestamp"),
                "signature": headers.get("webhook-signature") or headers.get("Webhook-Signature"),
                "verified": verified,
                "error": error,
                "status": status,
                "body": body,
            }) + "\n")
        try:
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up waiting (a timeout test)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
