"""Every curl example in README.md and docs/ answers what its page shows, run against the example config.

A page's examples run in order, against a fresh database, as a reader would type them after
`POSTBACK_ADMIN_PASSWORD=change-me make run`. A ```bash block with a line that starts with `curl` is run
by bash, in a folder the page's examples share (for cookie jars), and its output is checked against the
`# ` lines inside the block, or else against the ```json, ```http or ```text block right after it. In an
answer, `…` stands for anything: part of a text, a whole value, any one item of a list (or the rest of it,
as its last item) or the other keys of an object (as `"…": "…"`). An ```http answer gives the status
line, some of the headers and the body. The dispatcher drains before each example, as it would have by
the time a person types the next command.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from werkzeug.serving import make_server

from app import create_app
from config import load_config
from delivery.dispatcher import Dispatcher
from models import database
from platforms import REGISTRY
from tests.conftest import DATABASE_FILES, ROOT

ADMIN_PASSWORD = "change-me"  # what README.md's first steps start the server with
DOCUMENTED_BASE = "http://127.0.0.1:8000"
ANY = "…"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")


class Block(NamedTuple):
    line: int
    language: str
    body: str
    follows: bool  # only blank lines since the previous block: it shows that block's answer


class Example(NamedTuple):
    line: int
    script: str
    answer: str
    kind: str  # json | http | text


def blocks(text: str) -> list[Block]:
    """The page's fenced blocks."""
    found, lines, i, last_end = [], text.splitlines(), 0, -1
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            follows = last_end >= 0 and not any(line.strip() for line in lines[last_end + 1:i])
            found.append(Block(i + 1, opening.group(1), "\n".join(lines[i + 1:end]), follows))
            i = last_end = end
        i += 1
    return found


def examples(text: str) -> list[Example]:
    """The page's curl examples with the answers it shows for them; an example without one is an error."""
    found, page = [], blocks(text)
    for block, after in zip(page, page[1:] + [None]):
        if block.language != "bash" or not re.search(r"^curl ", block.body, re.MULTILINE):
            continue
        if "\n# " in block.body:
            found += _commented(block)
        elif after is not None and after.follows and after.language in ("json", "http", "text"):
            found.append(Example(block.line, block.body, after.body, after.language))
        else:
            raise AssertionError(f"line {block.line}: a curl example needs its answer: `# ` lines, "
                                 "or a json, http or text block right after it")
    return found


def _commented(block: Block) -> list[Example]:
    """Commands each followed by `# ` lines, their answer."""
    found, command, answer = [], [], []
    for text in block.body.splitlines() + [""]:
        if text.startswith("# "):
            answer.append(text[2:])
            continue
        if answer:
            found.append(Example(block.line, "\n".join(command), "\n".join(answer), "text"))
            command, answer = [], []
        if text:
            command.append(text)
    if command:
        raise AssertionError(f"line {block.line}: the last command has no `# ` answer")
    return found


def pattern(expected: str) -> re.Pattern:
    """A text of the page as a regular expression in which `…` matches anything."""
    return re.compile(".*?".join(re.escape(part) for part in expected.split(ANY)), re.DOTALL)


def mismatches(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Where `actual` differs from `expected`, read with the page's `…` conventions."""
    if expected == ANY:
        return []
    if isinstance(expected, str):
        if isinstance(actual, str) and pattern(expected).fullmatch(actual):
            return []
    elif isinstance(expected, dict) and isinstance(actual, dict):
        keys = set(expected) - {ANY}
        extra = [] if ANY in expected else sorted(set(actual) - keys)
        missing = sorted(keys - set(actual))
        if extra or missing:
            return [f"{path}: keys {extra} not shown, keys {missing} not answered"]
        return [m for key in sorted(keys) for m in mismatches(expected[key], actual[key], f"{path}.{key}")]
    elif isinstance(expected, list) and isinstance(actual, list):
        shown = expected[:-1] if expected and expected[-1] == ANY else expected
        if len(actual) < len(shown) or (shown is expected and len(actual) != len(shown)):
            return [f"{path}: {len(actual)} items, the page shows {len(expected)}"]
        return [m for i, (e, a) in enumerate(zip(shown, actual)) for m in mismatches(e, a, f"{path}[{i}]")]
    elif isinstance(expected, bool) == isinstance(actual, bool) and expected == actual:
        return []
    return [f"{path}: the page shows {expected!r}, the answer is {actual!r}"]


def text_mismatches(expected: str, actual: str) -> list[str]:
    """A JSON answer is compared as JSON, anything else line by line."""
    try:
        return mismatches(json.loads(expected), json.loads(actual))
    except ValueError:
        pass
    want, got = expected.strip().splitlines(), actual.strip().splitlines()
    if len(want) != len(got):
        return [f"{len(got)} lines answered, the page shows {len(want)}:\n{actual}"]
    return [f"line {i + 1}: the page shows {w!r}, the answer is {g!r}"
            for i, (w, g) in enumerate(zip(want, got)) if not pattern(w).fullmatch(g)]


def http_mismatches(expected: str, actual: str) -> list[str]:
    """The status line, each header shown (present among the answer's) and the body."""
    want_head, _, want_body = expected.partition("\n\n")
    got_head, _, got_body = actual.replace("\r\n", "\n").partition("\n\n")
    (want_status, *want_headers), (got_status, *got_headers) = want_head.splitlines(), got_head.splitlines()
    problems = [] if pattern(want_status).fullmatch(got_status) else [f"status {got_status!r}, the page shows {want_status!r}"]
    problems += [f"header {h!r} not answered" for h in want_headers
                 if not any(pattern(h).fullmatch(g) for g in got_headers)]
    return problems + text_mismatches(want_body, got_body)


def answer_mismatches(example: Example, output: str) -> list[str]:
    """Where the example's output differs from the answer its page shows."""
    if example.kind == "http":
        return http_mismatches(example.answer, output)
    if example.kind == "json":
        try:
            actual = json.loads(output)
        except ValueError:
            return [f"not JSON: {output!r}"]
        return mismatches(json.loads(example.answer), actual)
    return text_mismatches(example.answer, output)


class Server:
    """The app on a free port with the example config and a fresh database; its dispatcher drains on demand."""

    def __init__(self, folder: Path):
        env = {"POSTBACK_ADMIN_PASSWORD": ADMIN_PASSWORD, "DATABASE_URL": f"sqlite:///{folder}/data/postback.db"}
        self.config = load_config(str(ROOT / "config.example.yaml"), env=env, platforms=REGISTRY)
        DATABASE_FILES.append(folder / "data" / "postback.db")
        self.http = make_server("127.0.0.1", 0, create_app(self.config), threaded=True)
        self.base = f"http://127.0.0.1:{self.http.server_port}"
        self.dispatcher = Dispatcher(lambda: self.config)
        # A short poll: shutdown() waits for serve_forever's next look at its flag.
        self.thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and draining, and let go of the database."""
        self.http.shutdown()
        self.dispatcher.close()
        database.close()


def run(script: str, base: str, folder: Path) -> str:
    """The example's output, run by bash against `base`, the documented address put back in it."""
    env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*"}  # a proxy set for the machine must not see these calls
    result = subprocess.run(["bash", "-c", script.replace(DOCUMENTED_BASE, base)], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=60)
    return result.stdout.replace(base, DOCUMENTED_BASE)


WITH_EXAMPLES = [page for page in PAGES if examples(page.read_text())]


@pytest.mark.parametrize("doc", WITH_EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in WITH_EXAMPLES])
def test_every_curl_example_answers_what_its_page_shows(doc, tmp_path):
    found = examples(doc.read_text())
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = Server(tmp_path)
    try:
        problems = []
        for example in found:
            server.dispatcher.drain_once()
            output = run(example.script, server.base, tmp_path)
            problems += [f"line {example.line}: {m}" for m in answer_mismatches(example, output)]
    finally:
        server.stop()
    assert not problems, "\n".join(problems)


def test_the_reader_of_answers_takes_ellipses_for_anything():
    assert mismatches({"id": "conv_…", "…": "…"}, {"id": "conv_12", "more": 1}) == []
    assert mismatches([ANY, "b", ANY], ["a", "b", "c", "d"]) == []
    assert text_mismatches('{"id":"conv_…"}', '{"id": "conv_12"}') == []
    assert text_mismatches("200 image/gif …", "200 image/gif 43\n") == []
    assert mismatches({"ok": True}, {"ok": 1}) == ["$.ok: the page shows True, the answer is 1"]
    assert mismatches({"a": 1}, {"a": 1, "b": 2}) == ["$: keys ['b'] not shown, keys [] not answered"]
    assert mismatches(["a"], ["a", "b"]) == ["$: 2 items, the page shows 1"]
