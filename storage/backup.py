"""A consistent copy of a live SQLite database (docs/operations.md#backups-and-restore), safe while serving.

SQLite's online backup API copies the whole file in one step, inside one read transaction: in WAL mode writers
go on meanwhile, and the copy is the database as of that transaction's start, never a mix. (Copied page by page
in several steps instead, the copy would restart at each write from another connection: under steady traffic it
might never finish.)
"""
from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Callable


class BackupError(Exception):
    """A backup that cannot be made: said for a person, no traceback."""


@dataclass(frozen=True)
class Backup:
    path: str
    pages: int
    size: int


def sqlite_file(database_url: str) -> str:
    """The file of a sqlite:/// URL; BackupError for any other database, naming the tool to use instead."""
    scheme = database_url.partition("://")[0].lower()
    if scheme.startswith("postgres") or scheme in ("cockroachdb", "crdb", "psycopg3"):
        raise BackupError("the database is PostgreSQL: back it up with pg_dump, e.g. "
                          "pg_dump --format=custom --file=postback.dump \"$DATABASE_URL\" (docs/postgresql.md)")
    if not database_url.startswith("sqlite:///"):
        raise BackupError(f"backup copies SQLite databases only; use your database's own tool for {scheme}://")
    return database_url[len("sqlite:///"):]


def backup(source: str, target: str, progress: Callable[[int, int], None] | None = None) -> Backup:
    """Copy the SQLite file `source` to the new file `target` while it is in use; checked before it is kept.

    `progress(bytes_written, bytes_expected)` is called a few times a second from another thread.
    """
    if not os.path.exists(source):
        raise BackupError(f"{source}: no such database")
    if os.path.exists(target):
        raise BackupError(f"{target}: already exists; give a new file name")
    partial = f"{target}.partial"
    expected = os.path.getsize(source)
    done = threading.Event()
    watcher = threading.Thread(target=_watch_size, args=(partial, expected, progress, done), daemon=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(partial)
    try:
        if progress is not None:
            watcher.start()
        src.backup(dst, pages=-1)
        problem = dst.execute("PRAGMA integrity_check").fetchone()[0]
        pages = dst.execute("PRAGMA page_count").fetchone()[0]
    except sqlite3.Error as exc:
        dst.close()
        _remove(partial)
        raise BackupError(f"{source}: {exc}") from None
    finally:
        done.set()
        src.close()
    dst.close()
    if problem != "ok":
        _remove(partial)
        raise BackupError(f"the copy failed its integrity check: {problem}")
    os.replace(partial, target)
    size = os.path.getsize(target)
    if progress is not None:
        watcher.join()
        progress(size, size)
    return Backup(target, pages, size)


def _watch_size(path: str, expected: int, progress: Callable[[int, int], None], done: threading.Event) -> None:
    while not done.wait(0.25):
        try:
            progress(os.path.getsize(path), expected)
        except OSError:
            pass


def _remove(path: str) -> None:
    for name in (path, f"{path}-journal"):
        if os.path.exists(name):
            os.remove(name)
