"""FakeMeta in a process of its own for `make bench`, so it shares no GIL with the dispatcher under test.

    python bench/fake_meta_server.py <access token>

Prints one JSON line {"url": ...} once serving on 127.0.0.1, then answers commands read from stdin,
one JSON line each: `stats` (requests, their statuses, events and distinct event ids received) and
`reset` (forget everything received). Exits when stdin closes.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.meta import FakeMeta  # noqa: E402


def stats(fake: FakeMeta) -> dict:
    requests, events = list(fake.requests), list(fake.events)
    return {
        "requests": len(requests),
        "statuses": dict(Counter(str(r["status"]) for r in requests)),
        "events": len(events),
        "distinct_event_ids": len({e.get("event_id") for e in events}),
        "test_events": len(fake.test_events),
    }


def main() -> None:
    fake = FakeMeta(token=sys.argv[1], pixels=("123",)).start()
    try:
        print(json.dumps({"url": fake.url}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                answer = stats(fake)
            elif command == "reset":
                fake.requests.clear()
                fake.events.clear()
                fake.test_events.clear()
                answer = {"ok": True}
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
