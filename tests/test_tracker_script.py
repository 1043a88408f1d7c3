"""static/postback.js as served (docs/tracker.md): its caching headers, its size, and its click ids kept equal to
the ones the platforms declare. Its behaviour in a browser: tests/browser/test_tracker_browser.py."""
from __future__ import annotations

import gzip
import json
import re

from ingest import clickids
from tests.conftest import ROOT

SCRIPT = ROOT / "static" / "postback.js"
MAX_GZIPPED = 4096


def script_clicks() -> dict[str, str]:
    """The script's URL parameter -> /v1/track field map."""
    found = re.search(r"var CLICKS = (\{.*?\});", SCRIPT.read_text(encoding="utf-8"))
    assert found, "postback.js must keep its click ids in one `var CLICKS = {...};` line"
    return json.loads(found[1])


def test_the_script_is_served_with_an_etag_and_revalidated(client):
    first = client.get("/static/postback.js")
    assert (first.status_code, first.mimetype, first.get_data()) == (200, "text/javascript", SCRIPT.read_bytes())
    assert first.headers["Cache-Control"] == "no-cache"  # every page load asks; an upgrade reaches pages at once
    again = client.get("/static/postback.js", headers={"If-None-Match": first.headers["ETag"]})
    assert (again.status_code, again.get_data()) == (304, b"")


def test_the_script_is_at_most_4_kb_gzipped(capsys):
    size = len(gzip.compress(SCRIPT.read_bytes(), compresslevel=9))
    with capsys.disabled():  # shown in every run, not only a failing one
        print(f"\nstatic/postback.js: {SCRIPT.stat().st_size} bytes, {size} bytes gzipped (limit {MAX_GZIPPED})")
    assert size <= MAX_GZIPPED


def test_the_script_reads_every_url_parameter_an_ad_click_appends():
    assert set(script_clicks()) | {"fbclid"} == clickids.url_parameters()  # fbclid: minted into _fbc


def test_each_field_the_script_sends_is_read_as_the_click_id_of_its_url_parameter():
    spelled = clickids.names()
    assert {param: spelled[field][0].key for param, field in script_clicks().items()} == {
        param: spelled[param][0].key for param in script_clicks()}
