"""Identity normalization: raw PII in, SHA-256 flavours and coarse location out.

Rules: https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters;
a platform that hashes a field in a form of its own declares it (FLAVOURS), and it is hashed here too, once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache

import phonenumbers
import pycountry

from ingest.hashing import HASHED_RE, sha256
from ingest.iso import country_code
from email_validator import EmailNotValidError, validate_email
from platforms import REGISTRY
from platforms.base import Flavour

FIELDS = ("email", "phone", "first_name", "last_name", "gender", "date_of_birth",
          "city", "state", "zip", "country")

_GENDERS = {"f": "f", "female": "f", "m": "m", "male": "m"}
_BIRTH_DATES = tuple(re.compile(pattern, re.ASCII) for pattern in (
    r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})",
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})",
    r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})",
    r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})",
))


class Dropped(ValueError):
    """A value refused for its form; the message says why and never quotes the value."""


@dataclass(frozen=True)
class Identity:
    """Hashed identity flavours, plain coarse location, and why any field was dropped."""

    hashes: dict[str, str] = field(default_factory=dict)
    location: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def flavours(name: str) -> list[Flavour]:
    """The registered platforms' own forms of the identity field `name`, each once."""
    found: dict[str, Flavour] = {}
    for platform, module in REGISTRY.items():
        for flavour in module.FLAVOURS:
            if flavour.field == name and found.setdefault(flavour.key, flavour) != flavour:
                raise ValueError(f"platform {platform} declares identity flavour {flavour.key} unlike another platform")
    return list(found.values())


def keys_of(*names: str) -> tuple[str, ...]:
    """Every identity key the fields `names` are stored under, the platforms' flavours included."""
    return tuple(key for name in names for key in (*_HASHED[name][0], *(f.key for f in flavours(name))))


def normalize_identity(raw: Mapping[str, object], default_country: str | None) -> Identity:
    """Normalize and hash the identity fields of one event; refused values become reasons."""
    hashes: dict[str, str] = {}
    location: dict[str, str] = {}
    dropped: list[str] = []
    texts: dict[str, str] = {}
    for name in FIELDS:
        try:
            text = _text(raw.get(name))
        except Dropped as error:
            dropped.append(f"{name}: {error}")
        else:
            if text is not None:
                texts[name] = text

    country = (default_country or "").strip().lower() or None
    given = texts.get("country")
    if given and HASHED_RE.match(given):
        hashes["country"] = given.lower()
    else:
        if given:
            try:
                country = _country(given)
            except Dropped as error:
                dropped.append(f"country: {error}")
        if country:
            location["country"] = country

    for name, (keys, normalize) in _HASHED.items():
        if (text := texts.get(name)) is None:
            continue
        forms = flavours(name)
        if HASHED_RE.match(text):
            hashes.update(dict.fromkeys([*keys, *(f.key for f in forms)], text.lower()))
            continue
        try:
            values = normalize(text, country)
        except Dropped as error:
            dropped.append(f"{name}: {error}")
        else:
            hashes.update(zip(keys, map(sha256, values), strict=True))
            hashes.update((f.key, sha256(f.form(values[0]))) for f in forms)
    for name, (key, normalize_plain) in _LOCATION.items():
        if (text := texts.get(name)) is None:
            continue
        if HASHED_RE.match(text):
            hashes[key] = text.lower()
            continue
        try:
            location[name] = normalize_plain(text, country)
        except Dropped as error:
            dropped.append(f"{name}: {error}")
    return Identity(hashes, location, dropped)


def _text(value: object) -> str | None:
    """Coerce one raw value to NFC-normalized, trimmed text; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Dropped("must be text")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return unicodedata.normalize("NFC", str(value)).strip() or None


def _plain(text: str) -> str:
    """Lower-case, drop all Unicode punctuation, collapse whitespace runs to one space."""
    kept = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return " ".join(kept.split())


def _required(text: str) -> str:
    """Refuse a value that normalization emptied (e.g. only punctuation)."""
    if not text:
        raise Dropped("nothing left after removing punctuation and spaces")
    return text


def _email(text: str, country: str | None) -> tuple[str]:
    """Trimmed and lower-cased; kept when it, or a platform's own form of it, is an address."""
    email = text.lower()
    # A mail provider that ignores some characters makes an address of what syntax alone refuses
    # (`john..doe.@…`): a platform that hashes it without them still matches it.
    if not any(map(_is_address, dict.fromkeys([email, *(f.form(email) for f in flavours("email"))]))):
        raise Dropped("not a valid email address")
    return (email,)


# A plain ASCII address (dot-atom local part, LDH labels, a letters-only top-level domain) that email-validator
# accepts without a doubt; it costs a regex instead of the validator's Unicode and IDNA checks. Anything else,
# and the special-use domains the validator refuses, still goes through the validator.
_PLAIN_ADDRESS = re.compile(r"[a-z0-9_+-]{1,64}(?:\.[a-z0-9_+-]{1,64})*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                            r"(?P<tld>[a-z]{2,24})", re.ASCII)
_SPECIAL_USE = frozenset(("arpa", "invalid", "local", "localhost", "onion", "test"))


def _is_plain_address(email: str) -> bool:
    match = _PLAIN_ADDRESS.fullmatch(email)
    return (match is not None and match["tld"] not in _SPECIAL_USE and len(email) <= 254
            and email.index("@") <= 64 and "--" not in email.partition("@")[2])


def _is_address(email: str) -> bool:
    """Syntax only: we hash our own string, never the validator's normalized one."""
    if _is_plain_address(email):
        return True
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:  # its message may quote the value: never shown
        return False
    return True


def _phone(text: str, country: str | None) -> tuple[str, str]:
    """Digits with country code, and E.164 with '+'."""
    # A leading "00" is the international prefix nearly everywhere, not only where it is the
    # region's own (ad platforms' SDKs and docs strip it too).
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, country.upper() if country else None)
    except phonenumbers.NumberParseException as error:
        unknown = error.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        raise Dropped("no known country code" if unknown else "not a phone number") from None
    region = phonenumbers.region_code_for_country_code(number.country_code)
    possible = phonenumbers.is_possible_number_with_reason(number)
    # Possible, not valid: test numbers such as +1 555 123 4567 must be kept.
    if possible == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        raise Dropped(f"local number without area code for {region}")
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise Dropped(f"not a possible phone number for {region}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164[1:], e164


def _name(text: str, country: str | None) -> tuple[str, str]:
    """Spaced form and compact form without spaces."""
    name = _required(_plain(text))
    return name, name.replace(" ", "")


def _gender(text: str, country: str | None) -> tuple[str]:
    """Gender as f or m."""
    if text.lower() not in _GENDERS:
        raise Dropped("not one of f, m, female, male")
    return (_GENDERS[text.lower()],)


def _birth_date(text: str, country: str | None) -> tuple[str]:
    """Birth date as YYYYMMDD."""
    match = next(filter(None, (pattern.fullmatch(text) for pattern in _BIRTH_DATES)), None)
    if not match:
        raise Dropped("not a date in YYYY-MM-DD, YYYYMMDD, MM/DD/YYYY or DD.MM.YYYY")
    try:
        born = date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError:
        raise Dropped("not a real calendar date") from None
    if born.year < 1900 or born > date.today():
        raise Dropped("not between 1900 and today")
    return (born.strftime("%Y%m%d"),)


def _country(text: str) -> str:
    """ISO 3166 alpha-2, lowercase, from an alpha-2/alpha-3/numeric code or a country name."""
    code = country_code(text)
    if code is None:
        raise Dropped("not a known country")
    return code.lower()


def _city(text: str, country: str | None) -> str:
    """City in plain form, spaces kept."""
    return _required(_plain(text))


def _state(text: str, country: str | None) -> str:
    """US: 2-letter code; elsewhere lowercase without punctuation or spaces."""
    state = _required(_plain(text).replace(" ", ""))
    if country != "us":
        return state
    if state not in _us_states():
        raise Dropped("not a US state")
    return _us_states()[state]


@cache
def _us_states() -> dict[str, str]:
    """US subdivision names, codes and ISO codes (compacted) to the lowercase 2-letter code."""
    states: dict[str, str] = {}
    for sub in pycountry.subdivisions.get(country_code="US"):
        code = sub.code.split("-")[1].lower()
        for key in (sub.name, sub.code, code):
            states[_plain(key).replace(" ", "")] = code
    return states


def _zip(text: str, country: str | None) -> str:
    """Lowercase without spaces or dashes; US: the first 5 digits."""
    zip_code = _required("".join(ch for ch in text.lower()
                                 if not ch.isspace() and unicodedata.category(ch) != "Pd"))
    if country != "us":
        return zip_code
    if not (match := re.match(r"[0-9]{5}", zip_code)):
        raise Dropped("not a US zip code (needs 5 leading digits)")
    return match.group()


_HASHED: dict[str, tuple[tuple[str, ...], Callable[[str, str | None], tuple[str, ...]]]] = {
    "email": (("em",), _email),
    "phone": (("ph", "ph_e164"), _phone),
    "first_name": (("fn", "fn_compact"), _name),
    "last_name": (("ln", "ln_compact"), _name),
    "gender": (("ge",), _gender),
    "date_of_birth": (("db",), _birth_date),
}
_LOCATION: dict[str, tuple[str, Callable[[str, str | None], str]]] = {
    "city": ("ct", _city),
    "state": ("st", _state),
    "zip": ("zp", _zip),
}
