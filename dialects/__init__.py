"""Pure parsers, one per vendor dialect: request data in, CanonicalEvent out. No Flask here."""
from __future__ import annotations

import pkgutil
from importlib import import_module
from types import ModuleType


def packages() -> list[ModuleType]:
    """Every dialect's package (a folder here), imported: what a dialect declares is read from it."""
    return [import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__) if info.ispkg]
