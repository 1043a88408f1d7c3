"""`make bench`'s baseline: a bare Flask endpoint that only parses the same JSON and answers a small JSON body.

Served by bench/gunicorn_bare.conf.py with the same gunicorn settings as Postback (`make run`).
"""
from __future__ import annotations

import json

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/v1/track")
def track():
    body = json.loads(request.get_data())
    return jsonify({"success": True, "eventId": body.get("event_id"), "message": "Event recorded successfully"})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
