"""Phone numbers: E.164 normalisation and the country they belong to.

Most carrier numbers are already ``+`` and digits. For those, :func:`to_e164` skips
``phonenumbers.parse`` (its cost: bench/README.md, "Costs the code relies on") when the answer is known without it: the number
keeps its digits unless its country strips a national prefix that the digits start
with, and whether it is accepted depends only on the country code and the length of
the national number. Both facts come from phonenumbers' own metadata, read once per
country code; ``tests/test_contract.py`` proves the fast path equal to the slow one
on random input.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
import pycountry
from phonenumbers import PhoneMetadata

from smsrx.errors import SmsrxError
from smsrx.privacy import is_erased

__all__ = ["InvalidPhoneNumber", "country_alpha3", "to_e164"]

_PLUS_DIGITS = re.compile(r"\+[1-9][0-9]{3,17}")
_COUNTRY_CODES = frozenset(str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_NEVER = re.compile(r"(?!)")


class InvalidPhoneNumber(SmsrxError, ValueError):
    """The text is not a phone number in international form."""


def to_e164(value: str) -> str:
    """Normalise ``tel:+2250700000000``, ``+225 07 00 00 00 00`` or ``22507000000`` to E.164.

    Carriers send international numbers with or without ``+`` or a ``tel:`` prefix.
    A number is accepted when it is *possible* for its country, or when its country
    code is known and it has 8 to 15 digits: numbering plans change (Côte d'Ivoire went
    from 8 to 10 digits in 2021, and carrier docs still show the old form), and refusing
    a receipt because the metadata disagrees would lose it.
    """
    text = value.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    if text.startswith("00"):
        text = text[2:]
    if not text.startswith("+"):
        text = "+" + text
    return _fast(text) or _parse(text)


def _parse(text: str) -> str:
    """The slow path: phonenumbers parses and formats the number."""
    if len(text) > 32:
        raise InvalidPhoneNumber("too long for a phone number")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(str(exc)) from None
    if not _acceptable(number):
        raise InvalidPhoneNumber("not a possible international number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _acceptable(number: phonenumbers.PhoneNumber) -> bool:
    if phonenumbers.is_possible_number(number):
        return True
    known_country = phonenumbers.region_code_for_country_code(number.country_code or 0) != "ZZ"
    digits = len(str(number.country_code)) + len(phonenumbers.national_significant_number(number))
    return known_country and 8 <= digits <= 15


def _split(text: str) -> tuple[str, str] | None:
    """``+digits`` as (country code, national number), or None when it is not that form
    or no known country code starts it."""
    if _PLUS_DIGITS.fullmatch(text) is None:
        return None
    # The country code is the shortest known prefix, as phonenumbers extracts it.
    for size in (1, 2, 3):
        code = text[1 : 1 + size]
        if code in _COUNTRY_CODES:
            return code, text[1 + size :]
    return None


def _fast(text: str) -> str | None:
    """``text`` itself when it is already the E.164 answer, else None (take the slow path)."""
    split = _split(text)
    if split is None:
        return None
    code, national = split
    if not 2 <= len(national) <= 17 or _national_prefix(code).match(national):
        return None  # phonenumbers would refuse it, or strip a national prefix
    return text if _accepted(code, len(national)) else None


@functools.cache
def _national_prefix(code: str) -> re.Pattern[str]:
    """The pattern phonenumbers strips after this country code (never matches when none)."""
    cc = int(code)
    region = phonenumbers.region_code_for_country_code(cc)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else _NEVER


@functools.cache
def _accepted(code: str, length: int) -> bool:
    """Whether a national number of ``length`` digits is accepted after ``code``."""
    return _acceptable(
        phonenumbers.PhoneNumber(country_code=int(code), national_number=int("9" * length))
    )


@functools.lru_cache(maxsize=4096)
def country_alpha3(e164: str) -> str:
    """ISO 3166 alpha-3 country of an E.164 number, or ``ZZZ`` when it has none (+800, ...).
    An erased number's token (:mod:`smsrx.privacy`) keeps its country.

    Most country codes belong to one region only (+225 is Côte d'Ivoire whatever
    follows), and then phonenumbers answers from the code alone: so does the fast path,
    without parsing. Shared codes (+1, +7, +44, ...) take phonenumbers' own path;
    ``tests/test_contract.py`` proves both equal on random input."""
    if is_erased(e164):
        return e164.split(":", 2)[1]
    region = _single_region(e164)
    if region is None:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
        except phonenumbers.NumberParseException:
            return "ZZZ"
    return _alpha3(region) if region else "ZZZ"


def _single_region(text: str) -> str | None:
    """The region of ``+digits`` when its country code has only one, else None."""
    split = _split(text)
    if split is None:
        return None
    code, national = split
    if not 3 <= len(national) <= 17:
        return None  # phonenumbers may refuse it: let it say so
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(code)]
    return regions[0] if len(regions) == 1 else None


@functools.cache
def _alpha3(region: str) -> str:
    """ISO 3166 alpha-3 of a phonenumbers region (``001``, non-geographic: ``ZZZ``)."""
    country = pycountry.countries.get(alpha_2=region)
    return country.alpha_3 if country is not None else "ZZZ"
