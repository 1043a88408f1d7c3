"""SHA-256 as every platform takes it, and the test for a value that already is one."""
from __future__ import annotations

import hashlib
import re

HASHED_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")


def sha256(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hashed(text: str) -> str:
    """`text` trimmed and hashed, or lower-cased when it already is a SHA-256 digest."""
    text = text.strip()
    return text.lower() if HASHED_RE.match(text) else sha256(text)
