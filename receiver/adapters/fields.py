"""Field extraction shared by the carrier adapters: every failure names its field."""

from __future__ import annotations

import functools
import re
from typing import Any

from receiver.errors import BadRequest
from smsrx.phones import InvalidPhoneNumber, to_e164

__all__ = ["identifier", "object_at", "phone", "text", "token"]

_MAX_ID = 256
_IDENTIFIER = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_TOKEN = re.compile(r"[\x21-\x7e]+")
_PHONE = re.compile(r"(tel:)?\+?[1-9][0-9]{7,14}")

# Parsing a number costs about 25 µs; receipts for one recipient (network, then handset,
# then retries) repeat it.
_e164 = functools.lru_cache(maxsize=8192)(to_e164)


def object_at(doc: Any, path: str) -> dict[str, Any]:
    """``doc`` itself, which must be a JSON object, reported as ``path``."""
    if not isinstance(doc, dict):
        raise BadRequest(f"{path} must be an object", field=path)
    return doc


def text(
    doc: dict[str, Any], key: str, path: str, *, max_length: int, allow_empty: bool = False
) -> str:
    """A string field that must be present; blank only when ``allow_empty``."""
    value = doc.get(key)
    if value is None:
        raise BadRequest(f"{path} is missing", field=path)
    if not isinstance(value, str):
        raise BadRequest(f"{path} must be a string", field=path)
    if not allow_empty and not value.strip():
        raise BadRequest(f"{path} is empty", field=path)
    if len(value) > max_length:
        raise BadRequest(f"{path} is longer than {max_length} characters", field=path)
    return value


def token(doc: dict[str, Any], key: str, path: str, *, max_length: int) -> str:
    """A carrier keyword such as a status: visible ASCII only."""
    value = text(doc, key, path, max_length=max_length)
    if not _TOKEN.fullmatch(value):
        raise BadRequest(f"{path} must be visible ASCII without blanks", field=path)
    return value


def identifier(doc: dict[str, Any], key: str, path: str) -> str:
    """A carrier id: printable ASCII, no leading or trailing blanks (as in the OpenAPI doc)."""
    value = text(doc, key, path, max_length=_MAX_ID)
    if not _IDENTIFIER.fullmatch(value):
        raise BadRequest(f"{path} must be printable ASCII without surrounding blanks", field=path)
    return value


def phone(doc: dict[str, Any], key: str, path: str) -> str:
    """A phone number field (``tel:+CCNNN``, ``+CCNNN`` or ``CCNNN``), normalised to E.164."""
    value = text(doc, key, path, max_length=64)
    if not _PHONE.fullmatch(value):
        raise BadRequest(
            f"{path} must be an international number such as tel:+2250700000000", field=path
        )
    try:
        return _e164(value)
    except InvalidPhoneNumber as exc:
        raise BadRequest(
            f"{path} is not a phone number in international form: {exc}", field=path
        ) from None
