"""Ingest's one family of refusals, the route helpers every dialect shares, and the assets under static/."""
from __future__ import annotations

from ingest.inspector import Refusal
from models import Event
from routes.pixel import GIF


def test_the_static_pixel_gif_is_the_pixels_gif_and_no_pixel_call(client):
    response = client.get("/static/pixel.gif")

    assert (response.status_code, response.content_type, response.data) == (200, "image/gif", GIF)
    response.close()  # a static file is streamed from its open file
    assert (Event.select().count(), Refusal.select().count()) == (0, 0)
