"""The one outbound-HTTP seam: every call Postback makes to another service (ad platforms, Telegram) goes through an Http."""
from __future__ import annotations

import threading

import requests


class Http:
    """A session per thread and an explicit timeout on every call."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def post(self, url: str, timeout: float | None = None, **kwargs) -> requests.Response:
        """POST with this seam's timeout, or the caller's own when it has one."""
        return self.session.post(url, timeout=self.timeout if timeout is None else timeout, **kwargs)
