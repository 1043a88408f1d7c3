"""A fake alert webhook on 127.0.0.1: records every JSON body posted to it and answers 200."""
from __future__ import annotations

from tests.fakes.server import FakeServer, Handler, json_or_none


class FakeWebhook(FakeServer):
    """Any path; `texts()` lists the `text` of each message received, in order."""

    SCRIPT_WORDS = ("500",)

    def _handle(self, h: Handler) -> None:
        record = {"path": h.path, "body": json_or_none(h.read_body()), "status": None, "answer": None}
        self._serve(h, record, lambda: (200, {"ok": True}))

    def _scripted(self, scripted) -> tuple:
        return 500, {"ok": False}

    def texts(self) -> list[str]:
        return [r["body"]["text"] for r in self.requests if isinstance(r["body"], dict)]
