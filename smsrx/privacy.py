"""Personal data: phone numbers masked for the logs, and the token an erased number becomes.

A log line may say *which* number it is about only as much as an operator needs to tell
two apart: the country code, up to four digits after it, and the last two
(``+2250700****01``). :func:`mask_phone` masks every number in a text; every entry
point's log formatter (:mod:`smsrx.logs`) runs it over each line too, tracebacks
included, so a number a library writes is masked as well.

``smsrx privacy erase`` (docs/operations.md, "Data and privacy") replaces an erased
number with :func:`erasure_token`: random, so it cannot be turned back into the number
(a hash of a phone number can: there are too few numbers), and carrying the country, so
that the analytics still count the recipient in the right one.
"""

from __future__ import annotations

import re
import secrets

import phonenumbers

__all__ = ["ERASED_PREFIX", "Masked", "erasure_token", "is_erased", "mask_number", "mask_phone"]

ERASED_PREFIX = "erased:"
"""How every erased number starts: ``erased:CIV:5f0c9d1e2a3b4c5d``."""

_COUNTRY_CODES = frozenset(str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
# A number in international form: +, URL-encoded + (%2B) or tel:, then 8 to 15 digits.
_INTERNATIONAL = re.compile(
    r"(?P<lead>\+|%2[bB]|[tT][eE][lL]:)(?P<digits>[1-9][0-9]{7,14})(?![0-9])"
)
# Bare digits (VavaSMS sends its senders so): not part of a longer word, id, address or
# decimal, so that a UUID's group or an offset beside a dot or a dash stays as it is.
_BARE = re.compile(r"(?<![\w.\-/:%+*])(?P<lead>)(?P<digits>[1-9][0-9]{7,14})(?![\w.\-*])")
_KEEP_AFTER_CODE = 4
_KEEP_LAST = 2
_MASKED_AT_LEAST = 4


def mask_number(digits: str) -> str:
    """One number's digits (no ``+``) masked: country code, up to 4 digits, ``*``, the last 2."""
    code = next((digits[:n] for n in (1, 2, 3) if digits[:n] in _COUNTRY_CODES), digits[:3])
    national = digits[len(code) :]
    kept = max(0, min(_KEEP_AFTER_CODE, len(national) - _KEEP_LAST - _MASKED_AT_LEAST))
    hidden = max(1, len(national) - kept - _KEEP_LAST)
    return f"{code}{national[:kept]}{'*' * hidden}{national[kept + hidden :]}"


def _masked(match: re.Match[str]) -> str:
    return match.group("lead") + mask_number(match.group("digits"))


def mask_phone(text: str, *, bare: bool = True) -> str:
    """``text`` with every phone number in it masked: ``+2250700000001`` becomes
    ``+2250700****01``, and so do ``tel:+...``, ``%2B...`` (URL-encoded) and, unless
    ``bare`` is False, 8 to 15 digits standing alone (``2250700000001``)."""
    text = _INTERNATIONAL.sub(_masked, text)
    return _BARE.sub(_masked, text) if bare else text


class Masked:
    """``text`` masked as :func:`mask_phone` masks it, only when a log line is written:
    pass it as a ``%s`` argument, so a record the level or a throttle drops costs nothing."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return mask_phone(self.text)


def erasure_token(country: str) -> str:
    """A new token for an erased number of ``country`` (ISO alpha-3): ``erased:``, the
    country and 16 random hex digits. One erasure puts the same token everywhere; it is
    never derived from the number, whose digest could be reversed by trying them all."""
    return f"{ERASED_PREFIX}{country}:{secrets.token_hex(8)}"


def is_erased(value: str) -> bool:
    """Whether ``value`` is an erasure token rather than a number."""
    return value.startswith(ERASED_PREFIX)
