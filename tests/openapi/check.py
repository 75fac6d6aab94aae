#!/usr/bin/env python3
"""Checks real admin API exchanges against Roster's OpenAPI document with openapi-core.

Usage: check.py DOCUMENT EXCHANGES
  DOCUMENT   the OpenAPI 3.1 document (JSON) as the server served it
  EXCHANGES  a JSON list of {"method", "path", "query", "status", "content_type", "body"}

The document itself is validated first (openapi-spec-validator). An exchange answered 404 with
the listener's fallback sentence ("there is no such route") hit no route at all (the route is not in this build): it is listed as skipped,
not validated. A 405 (a method the path does not take) is checked against the document's
components/responses/MethodNotAllowed. Every path of the document must be exercised by some
exchange (or skipped).
Prints one line per exchange and a final JSON line {"skipped": [...], "failed": N}; exits 1
when anything failed.
"""
import json
import sys

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate


# The admin listener's fallback answer for a path no route serves.
NO_ROUTE = "there is no such route"


def check_method_not_allowed(doc, x):
    """A 405 against components/responses/MethodNotAllowed (JSON by its schema)."""
    import jsonschema

    if x["method"].lower() in doc["paths"].get(x["template"], {}):
        raise AssertionError("405 for a method the document lists for this path")
    content = doc["components"]["responses"]["MethodNotAllowed"]["content"]
    ctype = x["content_type"].split(";")[0].strip()
    if ctype not in content:
        raise AssertionError(f"content type {ctype!r} is not {list(content)}")
    schema = dict(content[ctype]["schema"], components=doc["components"])
    jsonschema.validate(json.loads(x["body"]), schema)


def main():
    doc = json.load(open(sys.argv[1]))
    exchanges = json.load(open(sys.argv[2]))
    validate(doc)
    api = OpenAPI.from_dict(doc)
    failed, skipped, used = 0, [], set()
    for x in exchanges:
        label = f"{x['method']} {x['path']}{'?' + x['query'] if x['query'] else ''} -> {x['status']}"
        if x["status"] == 404 and (x["body"] == "" or NO_ROUTE in x["body"]):
            skipped.append(x["template"])
            used.add(x["template"])
            print(f"skipped (no such route in this build): {label}")
            continue
        if x["status"] == 405:
            # No operation of the document takes this method: the answer must be the shared
            # MethodNotAllowed response, the error object in JSON.
            try:
                check_method_not_allowed(doc, x)
                print(f"ok: {label}")
            except Exception as e:
                failed += 1
                print(f"FAILED: {label}: {e}\n  body: {x['body'][:400]}")
            continue
        args = dict(p.split("=", 1) for p in x["query"].split("&") if p)
        req = MockRequest("http://roster.test", x["method"].lower(), x["path"], args=args,
                          headers={"Authorization": "Bearer t"})
        ctype = x["content_type"].split(";")[0].strip() or "application/json"
        resp = MockResponse(x["body"].encode(), status_code=x["status"], content_type=ctype)
        try:
            api.validate_response(req, resp)
            used.add(x["template"])
            print(f"ok: {label}")
        except Exception as e:  # every validation error is reported, none stops the run
            failed += 1
            detail = getattr(e, "__cause__", None) or e
            print(f"FAILED: {label}: {type(e).__name__}: {e}; {detail}\n  body: {x['body'][:400]}")
    for path in doc["paths"]:
        if path not in used:
            failed += 1
            print(f"FAILED: {path} is in the document but no exchange called it")
    print(json.dumps({"skipped": sorted(set(skipped)), "failed": failed}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
