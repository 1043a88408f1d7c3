"""Personal data recognised by its value, whatever its key is called: email addresses and phone numbers.

A value is an email address when it holds one anywhere; a phone number when it is written like one (digits
with `+` or phone punctuation) and `phonenumbers` takes it: a `+` number when it is possible, a national one
when it is valid for the site's country. Bare digit strings (ids, amounts, zip codes, order numbers) are not
phone numbers: nothing tells them apart from ids.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

import phonenumbers

from ingest.hashing import sha256

EMAIL = "an email address"
PHONE = "a phone number"
_EMAIL_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}")
_PHONE_RE = re.compile(r"\+?[\d\s().\-/]+")
_PUNCTUATION = frozenset(" ().-/")
MIN_DIGITS, MAX_DIGITS = 7, 15  # E.164 has at most 15 digits; fewer than 7 name no subscriber anywhere
MAX_CHARS = 1000  # longer text is not scanned for a phone number (it is never only one)


def kind(value: object, country: str | None = None) -> str | None:
    """EMAIL or PHONE when the value is personal data of that kind, else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    decoded = unquote(text) if "%" in text else text
    if "@" in decoded and _EMAIL_RE.search(decoded):
        return EMAIL
    return PHONE if _phone(decoded, country) is not None else None


def _phone(text: str, country: str | None) -> phonenumbers.PhoneNumber | None:
    """The number a phone-shaped text is, or None."""
    if len(text) > MAX_CHARS or not _PHONE_RE.fullmatch(text):
        return None
    digits = sum(ch.isdigit() for ch in text)
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        return None
    international = text.startswith(("+", "00"))
    if not international and not (country and _PUNCTUATION & set(text)):
        return None
    try:
        number = phonenumbers.parse("+" + text[2:] if text.startswith("00") else text,
                                    None if international else country.upper())
    except phonenumbers.NumberParseException:
        return None
    # Possible, not valid, for a `+` number: test numbers such as +1 555 123 4567 name someone too.
    accepted = phonenumbers.is_possible_number(number) if international else phonenumbers.is_valid_number(number)
    return number if accepted else None


def hashed_id(value: str, country: str | None = None) -> str | None:
    """A user id that is an email address or phone number, hashed as its identity hash is (so an erasure by
    that email or phone finds it); None for any other id."""
    found = kind(value, country)
    if found == EMAIL:
        return sha256(value.strip().lower())
    if found == PHONE:
        e164 = phonenumbers.format_number(_phone(value.strip(), country), phonenumbers.PhoneNumberFormat.E164)
        return sha256(e164[1:])
    return None
