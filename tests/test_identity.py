"""Identity normalization: every expected hash is computed from the normalized text written out."""

import hashlib

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings, strategies as st

from ingest.identity import _PLAIN_ADDRESS, HASHED_RE, Identity, _is_plain_address, normalize_identity, sha256
from platforms.base import spaceless_city

HEX = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"  # sha256("test"), upper


UNREADABLE_DATE = "date_of_birth: not a date in YYYY-MM-DD, YYYYMMDD, MM/DD/YYYY or DD.MM.YYYY"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_it_hashes_utf8_bytes_as_lowercase_hex():
    assert sha256("valéry") == digest("valéry")
    assert sha256("test") == HEX.lower()


@pytest.mark.parametrize("text, hashed", [
    (HEX, True), (HEX.lower(), True), (HEX[:-1], False), (HEX + "0", False),
    (HEX[:-1] + "g", False), (HEX + "\n", False),
])
def test_it_recognises_64_hex_digests_only(text, hashed):
    assert bool(HASHED_RE.match(text)) is hashed


def test_it_normalizes_a_whole_identity():
    identity = normalize_identity({
        "email": " John.Doe@Gmail.com ", "phone": "(650) 555-1212", "first_name": "Jean-Luc",
        "last_name": "O'Brien", "gender": "Male", "date_of_birth": "1990-01-15",
        "city": "San Francisco", "state": "California", "zip": "94102-1234", "country": "USA",
    }, "de")
    assert identity == Identity(
        hashes={
            "em": digest("john.doe@gmail.com"), "em_google": digest("johndoe@gmail.com"),
            "ph": digest("16505551212"), "ph_e164": digest("+16505551212"),
            "fn": digest("jeanluc"), "fn_compact": digest("jeanluc"),
            "ln": digest("obrien"), "ln_compact": digest("obrien"),
            "ge": digest("m"), "db": digest("19900115"),
        },
        location={"country": "us", "city": "san francisco", "state": "ca", "zip": "94102"},
        dropped=[],
    )


@pytest.mark.parametrize("raw", [
    {}, {"email": "   ", "phone": "", "first_name": None, "zip": "\t\n"},
])
def test_it_treats_empty_and_blank_values_as_absent(raw):
    assert normalize_identity(raw, None) == Identity({}, {}, [])


@pytest.mark.parametrize("raw, em, em_google", [
    ("  John.Doe@Example.COM ", "john.doe@example.com", "john.doe@example.com"),
    ("user+tag@gmail.com", "user+tag@gmail.com", "user+tag@gmail.com"),
    ("John.Doe@GMail.com", "john.doe@gmail.com", "johndoe@gmail.com"),
    ("j.o.h.n+pro.mo@googlemail.com", "j.o.h.n+pro.mo@googlemail.com", "john+promo@googlemail.com"),
    ("first.last@mail.gmail.com", "first.last@mail.gmail.com", "first.last@mail.gmail.com"),
    ("first.last@outlook.com", "first.last@outlook.com", "first.last@outlook.com"),
    ("ÉLODIE@exemple.fr", "élodie@exemple.fr", "élodie@exemple.fr"),
    ("E\u0301lodie@exemple.fr", "élodie@exemple.fr", "élodie@exemple.fr"),
])
def test_it_hashes_email_for_meta_and_with_googles_gmail_rule(raw, em, em_google):
    identity = normalize_identity({"email": raw}, None)
    assert identity.hashes == {"em": digest(em), "em_google": digest(em_google)}
    assert identity.dropped == []


# Google: "Remove all periods (.) that precede the domain name in gmail.com and googlemail.com email addresses"
# (https://developers.google.com/google-ads/api/docs/conversions/upload-identifiers,
# https://support.google.com/google-ads/answer/13262500). Dots Gmail ignores cannot make its address invalid.
@pytest.mark.parametrize("raw, em, em_google", [
    ("john..doe.@gmail.com", "john..doe.@gmail.com", "johndoe@gmail.com"),
    (".john.doe@googlemail.com", ".john.doe@googlemail.com", "johndoe@googlemail.com"),
    (" J.O.H.N..Doe+Promo@GMail.com ", "j.o.h.n..doe+promo@gmail.com", "johndoe+promo@gmail.com"),
    ("john.doe@gmail.com", "john.doe@gmail.com", "johndoe@gmail.com"),
    ("john_doe@gmail.com", "john_doe@gmail.com", "john_doe@gmail.com"),
])
def test_it_removes_every_dot_of_a_gmail_local_part_for_google_before_judging_or_hashing_it(raw, em, em_google):
    identity = normalize_identity({"email": raw}, None)
    assert identity == Identity({"em": digest(em), "em_google": digest(em_google)}, {}, [])


@pytest.mark.parametrize("raw", [
    "john..doe.@example.com", "..@gmail.com", "john..doe@gmail..com", "john.@mail.gmail.com",
])
def test_dots_only_gmail_ignores_do_not_save_an_address(raw):
    identity = normalize_identity({"email": raw}, None)
    assert identity == Identity({}, {}, ["email: not a valid email address"])


@pytest.mark.parametrize("raw", [
    "not-an-email", "john@", "@example.com", "john doe@example.com", "john@@example.com",
    "john@localhost", "john@example", "<john@example.com>",
])
def test_it_drops_email_whose_syntax_is_not_an_address(raw):
    identity = normalize_identity({"email": raw}, "us")
    assert identity.hashes == {}
    assert identity.dropped == ["email: not a valid email address"]


@pytest.mark.parametrize("raw, default_country, digits", [
    ("+1 555 123 4567", None, "15551234567"),
    ("(650) 555-1212", "US", "16505551212"),
    ("650.555.1212", "us", "16505551212"),
    ("+1 (650) 555-1212 ext. 99", None, "16505551212"),
    ("030 1234567", "DE", "49301234567"),
    ("+49 (0)30 1234567", "US", "49301234567"),
    ("0049 30 1234567", "DE", "49301234567"),
    ("0049 30 1234567", "US", "49301234567"),
    ("011 49 30 1234567", "US", "49301234567"),
    ("+44 844 412 4653", "US", "448444124653"),
    ("07911 123456", "GB", "447911123456"),
    (6505551212, "US", "16505551212"),
    (6505551212.0, "US", "16505551212"),
])
def test_it_hashes_phone_as_digits_and_as_e164(raw, default_country, digits):
    identity = normalize_identity({"phone": raw}, default_country)
    assert identity.hashes == {"ph": digest(digits), "ph_e164": digest("+" + digits)}
    assert identity.dropped == []


def test_it_keeps_possible_test_numbers():
    identity = normalize_identity({"phone": "+1 555 123 4567"}, None)
    hashes = {"ph": digest("15551234567"), "ph_e164": digest("+15551234567")}
    assert identity == Identity(hashes, {}, [])


def test_it_reads_national_phones_in_the_given_country_before_the_default():
    identity = normalize_identity({"phone": "030 1234567", "country": "Germany"}, "us")
    assert identity.hashes["ph_e164"] == digest("+49301234567")


@pytest.mark.parametrize("raw, default_country, reason", [
    ("abc", "US", "phone: not a phone number"),
    ("123", "US", "phone: not a possible phone number for US"),
    ("+1 650 555 12121212", None, "phone: not a possible phone number for US"),
    ("555-1212", "US", "phone: local number without area code for US"),
    ("6505551212", None, "phone: no known country code"),
    ("+999 123456", None, "phone: no known country code"),
])
def test_it_drops_garbage_phones(raw, default_country, reason):
    identity = normalize_identity({"phone": raw}, default_country)
    assert identity.hashes == {}
    assert identity.dropped == [reason]


@pytest.mark.parametrize("raw, plain, compact", [
    ("  John ", "john", "john"),
    ("O'Brien", "obrien", "obrien"),
    ("O\u2019Brien", "obrien", "obrien"),
    ("Jean-Luc", "jeanluc", "jeanluc"),
    ("J. R. R.", "j r r", "jrr"),
    ("Mary \t  Ann", "mary ann", "maryann"),
    ("van der Berg", "van der berg", "vanderberg"),
    ("Valéry", "valéry", "valéry"),
    ("Vale\u0301ry", "valéry", "valéry"),
    ("RAPHAËL", "raphaël", "raphaël"),
    ("Дмитрий", "дмитрий", "дмитрий"),
])
def test_it_hashes_names_without_punctuation_spaced_and_compact(raw, plain, compact):
    identity = normalize_identity({"first_name": raw, "last_name": raw}, None)
    assert identity.hashes == {
        "fn": digest(plain), "fn_compact": digest(compact),
        "ln": digest(plain), "ln_compact": digest(compact),
    }


def test_it_hashes_composed_and_decomposed_accents_alike():
    composed = normalize_identity({"first_name": "Valéry", "city": "São Paulo"}, None)
    decomposed = normalize_identity({"first_name": "Vale\u0301ry", "city": "Sa\u0303o Paulo"}, None)
    assert composed == decomposed


def test_it_drops_a_name_that_is_only_punctuation():
    identity = normalize_identity({"last_name": " .-' "}, None)
    assert identity.dropped == ["last_name: nothing left after removing punctuation and spaces"]


@pytest.mark.parametrize("raw, gender", [
    ("f", "f"), ("F", "f"), ("female", "f"), (" FEMALE ", "f"), ("Female", "f"),
    ("m", "m"), ("M", "m"), ("male", "m"), ("MALE", "m"),
])
def test_it_hashes_gender_as_f_or_m(raw, gender):
    assert normalize_identity({"gender": raw}, None).hashes == {"ge": digest(gender)}


@pytest.mark.parametrize("raw", ["x", "woman", "fem", "n", "0"])
def test_it_drops_other_genders(raw):
    identity = normalize_identity({"gender": raw}, None)
    assert (identity.hashes, identity.dropped) == ({}, ["gender: not one of f, m, female, male"])


@pytest.mark.parametrize("raw, yyyymmdd", [
    ("1990-01-15", "19900115"),
    ("19900115", "19900115"),
    ("01/15/1990", "19900115"),
    ("15.01.1990", "19900115"),
    (" 2000-02-29 ", "20000229"),
    ("1/5/1990", "19900105"),
    ("5.1.1990", "19900105"),
    (19900115, "19900115"),
    ("1900-01-01", "19000101"),
])
def test_it_hashes_birth_dates_as_yyyymmdd(raw, yyyymmdd):
    assert normalize_identity({"date_of_birth": raw}, None).hashes == {"db": digest(yyyymmdd)}


@pytest.mark.parametrize("raw, reason", [
    ("2023-02-30", "date_of_birth: not a real calendar date"),
    ("1990-13-01", "date_of_birth: not a real calendar date"),
    ("15/01/1990", "date_of_birth: not a real calendar date"),
    ("1850-01-01", "date_of_birth: not between 1900 and today"),
    ("2999-01-01", "date_of_birth: not between 1900 and today"),
    ("yesterday", UNREADABLE_DATE),
    ("1990/01/15", UNREADABLE_DATE),
    ("1990-01-15T00:00:00", UNREADABLE_DATE),
    ("199001151", UNREADABLE_DATE),
])
def test_it_drops_impossible_or_unreadable_birth_dates(raw, reason):
    identity = normalize_identity({"date_of_birth": raw}, None)
    assert (identity.hashes, identity.dropped) == ({}, [reason])


@pytest.mark.parametrize("field, keys", [
    ("email", ["em", "em_google"]),
    ("phone", ["ph", "ph_e164"]),
    ("first_name", ["fn", "fn_compact"]),
    ("last_name", ["ln", "ln_compact"]),
    ("gender", ["ge"]),
    ("date_of_birth", ["db"]),
    ("city", ["ct"]),
    ("state", ["st"]),
    ("zip", ["zp"]),
    ("country", ["country"]),
])
@pytest.mark.parametrize("given", [HEX, HEX.lower(), f"  {HEX} "])
def test_it_keeps_already_hashed_values_lowercased_and_not_rehashed(field, keys, given):
    identity = normalize_identity({field: given}, None)
    assert identity == Identity(dict.fromkeys(keys, HEX.lower()), {}, [])


def test_it_keeps_default_country_rules_but_no_plain_country_when_country_is_hashed():
    identity = normalize_identity({"country": HEX, "state": "Texas"}, "us")
    assert identity == Identity({"country": HEX.lower()}, {"state": "tx"}, [])


@pytest.mark.parametrize("value", [["a@example.com"], {"v": 1}, True, b"bytes", ("x",)])
@pytest.mark.parametrize("field", ["email", "phone", "first_name", "gender", "zip", "country"])
def test_it_drops_values_that_are_not_text(field, value):
    identity = normalize_identity({field: value}, None)
    assert identity == Identity({}, {}, [f"{field}: must be text"])


@pytest.mark.parametrize("raw, default_country, country", [
    ("US", None, "us"),
    ("us", "de", "us"),
    ("USA", None, "us"),
    ("DEU", None, "de"),
    ("United States", None, "us"),
    ("germany", "us", "de"),
    (" United Kingdom ", None, "gb"),
    ("Viet Nam", None, "vn"),
    ("Türkiye", None, "tr"),
    (840, None, "us"),
    (None, "DE", "de"),
    (None, "us", "us"),
])
def test_it_normalizes_country_to_alpha_2(raw, default_country, country):
    identity = normalize_identity({"country": raw}, default_country)
    assert identity == Identity({}, {"country": country}, [])


@pytest.mark.parametrize("raw, default_country, location", [
    ("Atlantis", "DE", {"country": "de"}),
    ("xx", "us", {"country": "us"}),
    ("Deutschland", "at", {"country": "at"}),
    ("Atlantis", None, {}),
])
def test_it_drops_unknown_countries_and_falls_back_to_the_default(raw, default_country, location):
    identity = normalize_identity({"country": raw}, default_country)
    assert identity == Identity({}, location, ["country: not a known country"])


def test_it_sets_no_country_without_one_given_or_by_default():
    assert normalize_identity({"city": "Paris"}, None).location == {"city": "paris"}


@pytest.mark.parametrize("raw, country, default_country, state", [
    ("California", "US", None, "ca"),
    ("ca", "US", None, "ca"),
    ("CA", None, "us", "ca"),
    ("new york", "United States", None, "ny"),
    ("New  York", "usa", None, "ny"),
    (" NY ", None, "US", "ny"),
    ("US-TX", "us", None, "tx"),
    ("District of Columbia", "us", None, "dc"),
    ("Puerto Rico", "us", None, "pr"),
    ("Île-de-France", "fr", None, "îledefrance"),
    ("Nordrhein-Westfalen", "DE", "us", "nordrheinwestfalen"),
    ("St. Gallen", "ch", None, "stgallen"),
    ("NSW", "au", None, "nsw"),
    ("California", None, None, "california"),
])
def test_it_normalizes_state_by_country(raw, country, default_country, state):
    identity = normalize_identity({"state": raw, "country": country}, default_country)
    assert identity.location["state"] == state
    assert identity.dropped == []


@pytest.mark.parametrize("raw, default_country", [
    ("Narnia", "us"), ("Bavaria", "us"), ("ZZ", "us"), ("Calif.", "US"),
])
def test_it_drops_unknown_us_states(raw, default_country):
    identity = normalize_identity({"state": raw}, default_country)
    assert "state" not in identity.location
    assert identity.dropped == ["state: not a US state"]


@pytest.mark.parametrize("raw, country, zip_code", [
    ("94102-1234", "us", "94102"),
    ("94102 1234", "us", "94102"),
    ("941021234", "us", "94102"),
    (" 02134 ", "US", "02134"),
    (94102, "us", "94102"),
    (94102.0, "us", "94102"),
    ("SW1A 1AA", "GB", "sw1a1aa"),
    ("M1 1AE", "gb", "m11ae"),
    ("10115", "de", "10115"),
    ("H3Z 2Y7", "ca", "h3z2y7"),
    ("1234-567", "pt", "1234567"),
    ("94102-1234", None, "941021234"),
])
def test_it_normalizes_zip_by_country(raw, country, zip_code):
    identity = normalize_identity({"zip": raw, "country": country}, None)
    assert identity.location["zip"] == zip_code
    assert identity.dropped == []


@pytest.mark.parametrize("raw, reason", [
    ("ABCDE", "zip: not a US zip code (needs 5 leading digits)"),
    ("9410", "zip: not a US zip code (needs 5 leading digits)"),
    ("A94102", "zip: not a US zip code (needs 5 leading digits)"),
    (2134, "zip: not a US zip code (needs 5 leading digits)"),
    (" - ", "zip: nothing left after removing punctuation and spaces"),
])
def test_it_drops_us_zips_without_five_leading_digits(raw, reason):
    identity = normalize_identity({"zip": raw}, "us")
    assert identity == Identity({}, {"country": "us"}, [reason])


@pytest.mark.parametrize("raw, city, spaceless", [
    ("San Francisco", "san francisco", "sanfrancisco"),
    ("St. Louis", "st louis", "stlouis"),
    ("  NEW   york ", "new york", "newyork"),
    ("Saint-Étienne", "saintétienne", "saintétienne"),
    ("Sa\u0303o Paulo", "são paulo", "sãopaulo"),
    ("Winston-Salem", "winstonsalem", "winstonsalem"),
    ("Coeur d'Alene", "coeur dalene", "coeurdalene"),
])
def test_it_keeps_city_plain_and_its_spaceless_form_drops_spaces(raw, city, spaceless):
    identity = normalize_identity({"city": raw}, None)
    assert identity == Identity({}, {"city": city}, [])
    assert spaceless_city(city) == spaceless


@pytest.mark.parametrize("raw, default_country", [
    ({"email": "secret.person@", "phone": "5550199", "first_name": "-'-", "gender": "Nonbinaryish",
      "date_of_birth": "31.02.1991", "city": "...", "state": "Narnia", "zip": "Z1P",
      "country": "Wakanda"}, "us"),
    ({"email": "jane doe@example.com", "phone": "+1 650 555 12121212", "last_name": "  ",
      "gender": "Womanly", "date_of_birth": "1850-07-04", "zip": "ABCDE", "state": "Gondor"}, "US"),
    ({"email": "x@@private.example", "phone": "call me maybe", "date_of_birth": "the 4th of July",
      "state": "Mordor", "country": "Zubrowka"}, "us"),
    ({"phone": "6505551212", "email": "frank@localhost", "date_of_birth": "2023-02-30"}, None),
])
def test_it_never_puts_a_raw_value_in_a_drop_reason(raw, default_country):
    identity = normalize_identity(raw, default_country)
    assert len(identity.dropped) == len([v for v in raw.values() if v.strip()])
    reasons = " ".join(identity.dropped).lower()
    for value in raw.values():
        if value.strip(" .-'"):
            assert value.strip().lower() not in reasons


def _validator_accepts(email: str) -> bool:
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True) | st.emails().map(str.lower))
def test_an_address_the_fast_path_takes_is_one_the_validator_accepts(email):
    assert not _is_plain_address(email) or _validator_accepts(email)


@pytest.mark.parametrize("email, plain", [
    ("john.doe@example.com", True), ("jo+tag@ex-ample.co.uk", True),
    ("a..b@example.com", False), ("x@localhost", False), ("a@b.test", False), ("a@-b.com", False),
    ("a@xn--bcher-kva.ch", False), ("jürgen@example.de", False), ("a" * 65 + "@example.com", False),
])
def test_only_plain_ascii_addresses_skip_the_validator(email, plain):
    assert _is_plain_address(email) is plain
