"""Phone numbers: E.164 normalisation and the country they belong to."""

from __future__ import annotations

import functools

import phonenumbers
import pycountry

__all__ = ["InvalidPhoneNumber", "country_alpha3", "to_e164"]


class InvalidPhoneNumber(ValueError):
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
    if len(text) > 32:
        raise InvalidPhoneNumber("too long for a phone number")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(str(exc)) from None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if phonenumbers.is_possible_number(number):
        return e164
    known_country = phonenumbers.region_code_for_country_code(number.country_code or 0) != "ZZ"
    if known_country and 8 <= len(e164) - 1 <= 15:
        return e164
    raise InvalidPhoneNumber("not a possible international number")


@functools.lru_cache(maxsize=4096)
def country_alpha3(e164: str) -> str:
    """ISO 3166 alpha-3 country of an E.164 number, or ``ZZZ`` when it has none (+800, ...)."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return "ZZZ"
    country = pycountry.countries.get(alpha_2=region) if region else None
    return country.alpha_3 if country is not None else "ZZZ"
