"""The refusals of ingest, one family for every dialect: each dialect's routes render them in its vendor's shape."""
from __future__ import annotations


class Refused(Exception):
    """A request a dialect will not act on; `reason` is what a person reads to fix it (never the refused value)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FieldError(Refused):
    """A typed field the dialect must refuse; `field` names it, `why` says what is wrong (None: it is missing)."""

    def __init__(self, field: str, why: str | None = None):
        super().__init__(f"Missing required field: {field}" if why is None else f"Invalid field: {field} ({why})")
        self.field, self.why = field, why


class BadCredentials(Refused):
    """A key, source key or session that is missing, unknown or another site's."""


class BodyTooLarge(Refused):
    """A body over `limit` bytes, refused before it is read whole."""

    def __init__(self, limit: int):
        super().__init__("Request body too large")
        self.limit = limit


class InvalidJSON(Refused):
    """A body that does not parse as JSON (or holds text that cannot be stored as UTF-8)."""

    def __init__(self, reason: str = "Invalid JSON body"):
        super().__init__(reason)


class NotAnObject(Refused):
    """A JSON body that is not the object (or list) the endpoint takes."""

    def __init__(self, reason: str = "Request body must be a JSON object"):
        super().__init__(reason)


class StorageFault(Refused):
    """Our storage cannot take a write now (disk full, read-only database, unusable lock file): answered 503, the
    request is not stored and can be sent again; `reason` says what is wrong, for the operator."""

    def __init__(self, reason: str):
        super().__init__(f"Storage unavailable: {reason}; nothing was stored, try again later")
        self.fault = reason
        self.status = 503
        self.retry_after = RETRY_AFTER


RETRY_AFTER = 30  # seconds a client is told to wait after a storage fault (the Retry-After header)
