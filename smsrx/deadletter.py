"""Dead letters: records that a worker or the spool replayer could not use, kept whole.

Nothing smsrx acknowledged is ever dropped silently. A record that a worker judges
invalid (it does not decode, or PostgreSQL refuses its data), or that the broker
refuses for good during spool replay, is published to ``sms.dead-letter.v1`` with the
reason and the original bytes, keyed like the original. An operator can read it,
mend the cause and republish ``value`` to ``topic``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

import orjson

from smsrx.clock import utcnow

__all__ = ["MAX_BYTES", "DeadLetter", "encode_dead_letter"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record that could not be used, and why."""

    source: str
    """Who gave it up: ``status-projection``, ``analytics`` or ``receiver-replay``."""
    reason: str
    """Why, in one line (the decode error, or PostgreSQL's message)."""
    topic: str
    """The topic the record was read from, or meant for."""
    key: bytes | None
    """The original record key."""
    value: bytes | None
    """The original record value, byte for byte."""
    partition: int | None = None
    """Its partition, when it was read from Kafka."""
    offset: int | None = None
    """Its offset, when it was read from Kafka."""


MAX_BYTES = 900 * 1024
"""A dead letter stays under the broker's default 1 MiB record limit."""


def encode_dead_letter(
    letter: DeadLetter, *, at: datetime | None = None, max_bytes: int | None = MAX_BYTES
) -> bytes:
    """The ``sms.dead-letter.v1`` record value: JSON with the original bytes in base64.

    ``value_text`` repeats the value as text when it is valid UTF-8, for people and
    ``jq``; ``value_base64`` is the exact original either way. A letter that would
    pass ``max_bytes`` drops ``value_text``, then, if still too large, the value
    itself (``value_omitted``: true): the original stays at its topic, partition and
    offset, and a dead letter that the broker refused would stop its worker.
    ``max_bytes=None`` never drops anything (a local quarantine file).
    """
    value = letter.value
    text: str | None
    try:
        text = None if value is None else value.decode()
    except UnicodeDecodeError:
        text = None
    doc = {
        "source": letter.source,
        "reason": letter.reason,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": None if letter.key is None else letter.key.decode(errors="replace"),
        "value_text": text,
        "value_base64": None if value is None else base64.b64encode(value).decode(),
        "dead_at": (at or utcnow()).isoformat().replace("+00:00", "Z"),
        "schema_version": 1,
    }
    encoded = orjson.dumps(doc)
    if max_bytes is None:
        return encoded
    if len(encoded) > max_bytes:
        doc["value_text"] = None
        encoded = orjson.dumps(doc)
    if len(encoded) > max_bytes:
        doc["value_base64"] = None
        doc["value_omitted"] = True
        encoded = orjson.dumps(doc)
    return encoded
