"""`make bench`'s baselines: bare Flask endpoints that do the least a server must do for the same request.

- POST /v1/track only parses the same JSON and answers a small JSON body;
- GET /<token>/<category>.gif answers the same GIF bytes as Postback's pixel (static/pixel.gif) with the same
  caching headers, and nothing else.

Served by bench/gunicorn_bare.conf.py with the same gunicorn settings as Postback (`make run`).
"""
from __future__ import annotations

import json
from pathlib import Path

from flask import Flask, Response, jsonify, request

app = Flask(__name__)
GIF = (Path(__file__).resolve().parent.parent / "static" / "pixel.gif").read_bytes()


@app.post("/v1/track")
def track():
    body = json.loads(request.get_data())
    return jsonify({"success": True, "eventId": body.get("event_id"), "message": "Event recorded successfully"})


@app.get("/<token>/<category>.gif")
def pixel(token: str, category: str):
    return Response(GIF, mimetype="image/gif",
                    headers={"Cache-Control": "no-store", "Cross-Origin-Resource-Policy": "cross-origin"})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
