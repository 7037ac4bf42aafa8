"""Decoding request bodies, strictly and without I/O.

JSON must be valid UTF-8, finite, at most :data:`MAX_DEPTH` levels deep, and free
of duplicate keys: a payload with two ``callbackData`` is ambiguous, so it is
refused rather than guessed at. Forms must be valid UTF-8 with each field at most
once.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import orjson

from receiver.errors import BadRequest, UnsupportedMediaType

__all__ = ["FORM", "JSON", "MAX_DEPTH", "media_type", "parse_form", "parse_json"]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted. Carrier payloads are 2 to 4 levels
deep; orjson allows 1024, which the recursive duplicate-key pass cannot decode."""


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower-cased, without parameters."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dup = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise BadRequest(f"duplicate key {dup!r}", field=dup)
    return doc


def _within_depth(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests arrays and objects at most ``limit`` deep (iteratively)."""
    stack = [(doc, 1)] if isinstance(doc, dict | list) else []
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth == limit:
                    return False
                stack.append((child, depth + 1))
    return True


# json.loads(body, object_pairs_hook=...) builds a new decoder on every call; this is the
# same decoder, built once, fed exactly the text json.loads would decode.
_DUPLICATE_KEYS = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def parse_json(body: bytes) -> Any:
    """Decode a JSON body or raise :class:`BadRequest`."""
    if not body.strip():
        raise BadRequest("empty body")
    try:
        doc = orjson.loads(body)  # strict UTF-8, finite numbers, bounded depth
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    # Fewer brackets than the limit cannot nest deeper than it: most bodies skip the walk.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and not _within_depth(doc, MAX_DEPTH):
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    # A second pass only finds duplicate keys, which orjson silently merges. The
    # document kept is orjson's: it holds nothing orjson cannot write back (the
    # stdlib would keep integers of any size, which the event encoder refuses).
    _DUPLICATE_KEYS.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    return doc


def parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body or raise :class:`BadRequest`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("form body is not valid UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"invalid form body: not UTF-8 once decoded ({exc.reason})") from None
    except ValueError:  # its message repeats the field, which may be a number or a text
        raise BadRequest("invalid form body: a field is not name=value") from None
    return _no_duplicates(pairs)


def decode(content_type: str | None, body: bytes, accepted: frozenset[str]) -> Any:
    """Decode ``body`` according to its Content-Type, one of ``accepted``."""
    kind = media_type(content_type)
    if kind not in accepted:
        wanted = " or ".join(sorted(accepted))
        raise UnsupportedMediaType(f"Content-Type must be {wanted}, not {kind or 'missing'!r}")
    return parse_json(body) if kind == JSON else parse_form(body)
