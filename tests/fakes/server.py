"""The HTTP plumbing every fake platform shares: a loopback server that records requests and plays a script."""
from __future__ import annotations

import json
import random
import socket
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

HUNG = object()  # FakeServer._record's answer once stop() cut a scripted hang short: send nothing


# Letters without vowels: a random id the fakes hand out can never spell a name the suite scans the databases for
# ("Doe", "Ada", …), so the end-of-run PII scan cannot fail by chance.
OPAQUE = "".join(c for c in string.ascii_letters if c.lower() not in "aeiou") + string.digits + "-_"


def opaque_id(length: int) -> str:
    """A random id like a vendor's (trace ids, request ids, invite link tokens)."""
    return "".join(random.choices(OPAQUE, k=length))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is expected; bugs in the fake are not
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the fake's _handle()."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self):
        self.server.fake._track(self.connection, False)
        super().finish()

    def do_POST(self):
        self.server.fake._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def read_body(self) -> bytes:
        """The request body, Content-Length or chunked."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)


def json_or_none(raw: bytes):
    """The body parsed as JSON; None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class FakeServer:
    """A real HTTP server on 127.0.0.1; a platform's fake routes, validates and answers in _handle()."""

    SCRIPT_WORDS: tuple = ()  # the scripted answers that are plain strings
    SCRIPT_SHAPES: tuple = ()  # (first item, length) of the scripted answers that are tuples
    TEXT_TYPE, JSON_TYPE = "text/html", "application/json"

    def __init__(self):
        self.url: str | None = None
        self.requests: list[dict] = []
        self._script: list = []
        self._lock = threading.Lock()
        self._conns: set = set()
        self._server = self._thread = None
        self._stopping = threading.Event()

    def start(self) -> Self:
        """Start serving on an OS-chosen port."""
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # stop() waits until the loop next looks up: a short poll keeps each test's teardown short
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.005}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and abandon hung handlers."""
        if not self._server:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # keep-alive handlers would otherwise keep answering after stop()
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(timeout=2)
        self._server = None

    def __enter__(self) -> Self:
        return self if self._server else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, *answers) -> None:
        """Queue answers for the next requests, one each, first in first out."""
        for answer in answers:
            if answer not in self.SCRIPT_WORDS and not (
                    isinstance(answer, tuple) and answer and (answer[0], len(answer)) in self.SCRIPT_SHAPES):
                raise ValueError(f"unknown scripted answer: {answer!r}")
        with self._lock:
            self._script.extend(answers)

    def _track(self, conn, alive: bool) -> None:
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def _handle(self, h: Handler) -> None:
        raise NotImplementedError

    def _scripted(self, scripted) -> tuple:
        """(status, answer[, headers]) for a scripted answer other than a hang."""
        raise NotImplementedError

    def _serve(self, h: Handler, record: dict, answer) -> None:
        """Record the request and send the next scripted answer, or else answer()'s (status, answer[, headers])."""
        scripted = self._record(h, record)
        if scripted is not HUNG:
            self._reply(h, record, *(self._scripted(scripted) if scripted else answer()))

    def _record(self, h: Handler, record: dict):
        """Keep the request and take the next scripted answer; a ("hang", seconds) one is waited out here."""
        with self._lock:
            self.requests.append(record)
            scripted = self._script.pop(0) if self._script else None
        if isinstance(scripted, tuple) and scripted[0] == "hang":
            if self._stopping.wait(scripted[1]):
                h.close_connection = True
                return HUNG
            return None
        return scripted

    def _reply(self, h: Handler, record: dict, status: int, answer, headers: dict | None = None) -> None:
        """Send the answer (str as it is, None as nothing, else JSON) and note it on the record."""
        record["status"], record["answer"] = status, answer
        payload = answer.encode() if isinstance(answer, str) else b"" if answer is None else json.dumps(answer).encode()
        h.send_response(status)
        content_type = self._content_type(answer)
        if content_type:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(payload)))
        for name, value in {**self._headers(record), **(headers or {})}.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(payload)

    def _content_type(self, answer) -> str | None:
        return self.TEXT_TYPE if isinstance(answer, str) else self.JSON_TYPE

    def _headers(self, record: dict) -> dict:
        """The headers this platform puts on every answer."""
        return {}


class PixelFake(FakeServer):
    """A fake events API that takes one access token for some pixels and can be told to refuse event ids."""

    def __init__(self, token: str, pixels: tuple[str, ...]):
        super().__init__()
        self.token, self.pixels = token, tuple(pixels)
        self.clock = time.time
        self.events: list[dict] = []
        self._rejected: dict[str, str] = {}

    def accept_event(self, event_id: str) -> None:
        """Stop failing batches that contain this event_id."""
        self._rejected.pop(event_id, None)

    def set_token(self, token: str) -> None:
        """Accept only this access token from now on."""
        self.token = token
