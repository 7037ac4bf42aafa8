"""Field extraction shared by the carrier adapters: every failure names its field.

What an adapter accepts is answered 200, so it must be something the workers can store.
PostgreSQL cannot hold NUL (U+0000) in text or jsonb, nor in json that the workers unpack
with ``json_to_recordset`` (SQLSTATE 22P05): a NUL in any field, extracted or only kept
in ``raw``, is refused here with a 400 naming it, never acknowledged and skipped later.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson

from receiver.errors import BadRequest
from smsrx.phones import InvalidPhoneNumber, to_e164

__all__ = ["identifier", "object_at", "phone", "storable", "text", "token"]

_MAX_ID = 256
_NUL = "\x00"
_IDENTIFIER = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_TOKEN = re.compile(r"[\x21-\x7e]+")
_PHONE = re.compile(r"(tel:)?\+?[1-9][0-9]{7,14}")

# Receipts for one recipient (network, then handset, then retries) repeat its number;
# what parsing costs is in bench/README.md, "Costs the code relies on".
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
    if _NUL in value:
        raise BadRequest(f"{path} contains NUL (U+0000), which cannot be stored", field=path)
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


def storable(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc``, the whole payload that events keep as ``raw``, once checked that no key or
    string in it holds a NUL (its depth is bounded by :mod:`receiver.bodies`)."""
    # orjson writes NUL as \u0000, and nothing else as that: when it is absent, there is
    # no NUL, and the walk that names the field runs only when there may be one.
    if b"\\u0000" in orjson.dumps(doc):
        _no_nul(doc, "")
    return doc


def _no_nul(value: Any, path: str) -> None:
    if isinstance(value, str):
        if _NUL in value:
            where = path or "body"
            raise BadRequest(f"{where} contains NUL (U+0000), which cannot be stored", field=where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if _NUL in key:
                where = path or "body"
                raise BadRequest(
                    f"a key in {where} contains NUL (U+0000), which cannot be stored", field=where
                )
            _no_nul(item, f"{path}.{_short(key)}" if path else _short(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, f"{path}[{i}]")


def _short(key: str) -> str:
    # a field name echoed in the answer: a carrier's key, but not a 60 kB one
    return key if len(key) <= 64 else key[:64] + "…"
