"""Secrets Postback makes for itself and keeps beside the database (the generated admin password, the console's
cookie key): made once, under a file lock, so that workers starting together agree on one value."""
from __future__ import annotations

import fcntl
import os
from typing import Callable


def folder(database_url: str) -> str:
    """The folder of a SQLite database file; `data` (relative to the working directory) for any other database."""
    if database_url.startswith("sqlite:///") and not database_url.endswith(":memory:"):
        return os.path.dirname(os.path.abspath(database_url[len("sqlite:///"):]))
    return os.path.abspath("data")


def keep(path: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The value stored at `path`; made and written (mode 0600) when there is none yet. True when made by this call."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            with open(path) as stored:
                value = stored.read().strip()
            if value:
                return value, False
        except FileNotFoundError:
            pass
        value = make()
        fresh = path + ".new"
        with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(value + "\n")
        os.replace(fresh, path)  # whole or absent: a reader never sees half a password
        return value, True
