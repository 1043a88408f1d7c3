"""Lean fake platform APIs for `make bench`, in a process of their own (no GIL shared with Postback).

    python bench/fake_platforms.py meta [tiktok snapchat google_ads ga4]

Each named platform gets its own loopback HTTP server that answers every well-formed request with that API's
success response (the shapes tests/fakes/* answer with, without their validation, so the fakes' own CPU stays
small beside Postback's). Prints one JSON line {"urls": {platform: url}} once serving, then answers commands read
from stdin, one JSON line each: `stats` (per platform: requests, their statuses, events, distinct event ids) and
`reset`. Exits when stdin closes.
"""
from __future__ import annotations

import json
import re
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

PLATFORMS = ("meta", "tiktok", "snapchat", "google_ads", "ga4")
ADS_ACTION = re.compile(r"/v\d+/customers/(\d+):uploadClickConversions")


def event_key(item) -> str:
    """What makes one delivered event distinct, whichever platform's shape it has."""
    if isinstance(item, dict):
        for key in ("event_id", "orderId", "order_id"):
            if item.get(key):
                return str(item[key])
        params = item.get("params")
        if isinstance(params, dict) and params.get("transaction_id"):
            return str(params["transaction_id"])
    return json.dumps(item, sort_keys=True)


def items(platform: str, path: str, body) -> list | None:
    """The events of one request, or None when the request is not that API's event call."""
    if not isinstance(body, dict):
        return None
    if platform == "google_ads":
        return body.get("conversions") if ADS_ACTION.fullmatch(path) else None
    if platform == "ga4":
        return body.get("events") if path.endswith("/collect") else None
    return body.get("data")


def success(platform: str, events: list) -> tuple[int, bytes]:
    """The API's success answer for a request carrying these events."""
    if platform == "meta":
        answer = {"events_received": len(events), "messages": [], "fbtrace_id": "AbCdEfGhIjK"}
    elif platform == "tiktok":
        answer = {"code": 0, "message": "OK", "request_id": "2026120600000000000000000000000000", "data": {}}
    elif platform == "snapchat":
        answer = {"status": "VALID"}
    elif platform == "google_ads":
        answer = {"results": [{k: e[k] for k in ("gclid", "conversionAction", "conversionDateTime") if k in e}
                              for e in events], "jobId": "1"}
    else:  # ga4: 204, nothing said
        return 204, b""
    return 200, json.dumps(answer).encode()


class Fake:
    def __init__(self, platform: str):
        self.platform = platform
        self.lock = threading.Lock()
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = fake.answer(urlsplit(self.path).path, raw, self.headers.get("Content-Type", ""))
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.statuses: Counter = Counter()
            self.events = 0
            self.keys: set[str] = set()

    def answer(self, path: str, raw: bytes, content_type: str) -> tuple[int, bytes]:
        if self.platform == "google_ads" and path.rstrip("/").endswith("/token"):
            status, payload = 200, json.dumps({"access_token": "bench-access-token", "expires_in": 3599,
                                               "scope": "https://www.googleapis.com/auth/adwords",
                                               "token_type": "Bearer"}).encode()
            with self.lock:
                self.statuses["token " + str(status)] += 1
            return status, payload
        try:
            if "x-www-form-urlencoded" in content_type:
                fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
                body = {"data": json.loads(fields.get("data", "null"))}
            else:
                body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        events = items(self.platform, path, body)
        if not isinstance(events, list) or not events:
            status, payload = 400, json.dumps({"error": f"bench fake {self.platform}: not an event call"}).encode()
        else:
            status, payload = success(self.platform, events)
        with self.lock:
            self.statuses[str(status)] += 1
            if status < 300:
                self.events += len(events)
                self.keys.update(event_key(e) for e in events)
        return status, payload

    def stats(self) -> dict:
        with self.lock:
            return {"requests": sum(n for s, n in self.statuses.items() if not s.startswith("token")),
                    "statuses": dict(self.statuses), "events": self.events, "distinct_event_ids": len(self.keys)}


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in PLATFORMS]
    if unknown or not names:
        sys.exit(f"usage: fake_platforms.py {' '.join(PLATFORMS)} (unknown: {unknown})")
    fakes = {name: Fake(name) for name in names}
    print(json.dumps({"urls": {name: fake.url for name, fake in fakes.items()}}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            answer = {name: fake.stats() for name, fake in fakes.items()}
        elif command == "reset":
            for fake in fakes.values():
                fake.reset()
            answer = {"ok": True}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
