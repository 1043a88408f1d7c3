"""Secrets Postback makes for itself (the generated admin password, the console's cookie key): made once, under a
file lock, so that workers starting together agree on one value.

On SQLite the value is a file beside the database, which every worker of the box reads. On PostgreSQL several
nodes share the database but not a folder, and each made its own: a console cookie signed by one node was refused
by the next, and each node had its own generated password. There the database holds the value (`kept_values`),
the first node to start makes it, and each node keeps a copy in its `data/` file for the operator to read.
"""
from __future__ import annotations

import fcntl
import os
from typing import Callable

from peewee import CharField, TextField

from models import BaseModel, writing
from storage.stores import Store


class KeptValue(BaseModel):
    """One value Postback made for itself, by its file's name; PostgreSQL only."""

    name = CharField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "kept_values"


def folder(database_url: str) -> str:
    """The folder of a SQLite database file; `data` (relative to the working directory) for any other database."""
    if on_sqlite(database_url):
        return os.path.dirname(os.path.abspath(database_url[len("sqlite:///"):]))
    return os.path.abspath("data")


def on_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite:///") and not database_url.endswith(":memory:")


def path_of(database_url: str, name: str) -> str:
    """The file that holds (or, on PostgreSQL, shows) the value named `name`."""
    return os.path.join(folder(database_url), name)


def keep(database_url: str, name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The value named `name`; made by `make` and stored when there is none yet. True when made by this call."""
    path = path_of(database_url, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        stored = _read(path)
        if on_sqlite(database_url):
            if stored:
                return stored, False
            value, made = make(), True
        else:
            value, made = _shared(name, make)
            if value == stored:
                return value, made
        _write(path, value)
        return value, made


def _shared(name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The database's value for `name`, inserted from `make()` unless another node's is there first."""
    offered = make()
    with writing():
        KeptValue.insert(name=name, value=offered).on_conflict_ignore().execute()
        value = KeptValue.get_by_id(name).value
    return value, value == offered


def _read(path: str) -> str:
    try:
        with open(path) as stored:
            return stored.read().strip()
    except FileNotFoundError:
        return ""


def _write(path: str, value: str) -> None:
    fresh = path + ".new"
    with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(value + "\n")
    os.replace(fresh, path)  # whole or absent: a reader never sees half a password


STORE = Store("kept_values", (KeptValue,),
              impersonal="secrets Postback made for itself: the console's cookie key, a generated admin password")
