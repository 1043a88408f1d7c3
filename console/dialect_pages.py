"""The pages dialects add to the console, found through each dialect package's CONSOLE_PAGES declaration."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

import dialects


def pages() -> dict[str, ModuleType]:
    """Every dialect page by its PAGE slug (`leads`), in the dialects' order."""
    modules = [import_module(name) for package in dialects.packages() for name in getattr(package, "CONSOLE_PAGES", ())]
    return {module.PAGE: module for module in modules}


def page(slug: str) -> ModuleType | None:
    """The dialect page with this slug, or None."""
    return pages().get(slug)
