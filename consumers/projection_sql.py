"""Set-based SQL of status-projection: a few statements per batch, never one per event.

Every function runs inside the caller's transaction. A batch goes to PostgreSQL as one
JSON document, serialised by orjson in C straight from the event dataclasses and
unpacked server-side with ``json_to_recordset``: array parameters would cost asyncpg
several type checks per element, which dominated the worker's own CPU time. Rows that
concurrent transactions may both lock are sent sorted by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from consumers.projection import Key, Plan, Stored
from smsrx.codec import JSON_OPTIONS, encode
from smsrx.events import DeliveryReceipt, InboundMessage, Submission
from smsrx.statuses import FINAL_STATUSES, RANK, Status

__all__ = [
    "OutboxRow",
    "apply_plan",
    "insert_inbound",
    "insert_receipts",
    "insert_submissions",
    "recipient_rows",
]

OutboxRow = tuple[int, bytes, bytes]
"""(outbox id, record key, record value)."""

_NONE = Stored()

# History first: ON CONFLICT DO NOTHING is the exactly-once check. The statement returns
# the receipts that were already there (usually none), and the stored state (before this
# batch) of each recipient with new receipts that has a row or a submission.
_INSERT_RECEIPTS = """
WITH input AS (
    SELECT *
      FROM json_to_recordset($1::json)
           AS t(event_id uuid, provider text, message_id text, recipient text, status text,
                provider_status text, synthetic boolean, received_at timestamptz, raw json,
                source text, occurred_at timestamptz)
), inserted AS (
    INSERT INTO status_events (event_id, provider, message_id, recipient, status,
                               provider_status, synthetic, received_at, raw, source,
                               occurred_at)
    SELECT event_id, provider, message_id, recipient, status, provider_status,
           synthetic, received_at, raw, coalesce(source, 'push'), occurred_at
      FROM input
        ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, provider, message_id, recipient
), recipients AS (
    SELECT DISTINCT provider, message_id, recipient FROM inserted
)
SELECT true AS duplicate, i.event_id::text, NULL::text AS provider, NULL::text AS message_id,
       NULL::text AS recipient, NULL::text AS status, NULL::timestamptz AS status_at,
       NULL::text AS status_event_id, NULL::timestamptz AS first_event_at,
       NULL::timestamptz AS submitted_at
  FROM input i
 WHERE NOT EXISTS (SELECT 1 FROM inserted n WHERE n.event_id = i.event_id)
UNION ALL
SELECT false, NULL, k.provider, k.message_id, k.recipient,
       rs.status, rs.status_at, rs.status_event_id, rs.first_event_at,
       coalesce(rs.submitted_at, s.submitted_at)
  FROM recipients k
  -- LATERAL ... LIMIT 1: one index lookup per recipient, never a scan of the table
  LEFT JOIN LATERAL (
        SELECT r.status, r.status_at, r.status_event_id, r.first_event_at, r.submitted_at
          FROM recipient_status r
         WHERE r.provider = k.provider AND r.message_id = k.message_id
           AND r.recipient = k.recipient
         LIMIT 1) rs ON true
  LEFT JOIN LATERAL (
        SELECT sub.submitted_at
          FROM submissions sub
         WHERE sub.provider = k.provider AND sub.message_id = k.message_id
         LIMIT 1) s ON true
 WHERE rs IS DISTINCT FROM NULL OR s IS DISTINCT FROM NULL
"""

# The columns that follow the receipt that outranks the others (see consumers.projection).
_FOLLOW_BEST = (
    "status",
    "status_rank",
    "is_final",
    "provider_status",
    "status_event_id",
    "status_at",
)
_OUTRANKS = (
    "(excluded.status_rank > rs.status_rank OR (excluded.status_rank = rs.status_rank"
    ' AND (excluded.status_at, excluded.status_event_id COLLATE "C")'
    ' < (rs.status_at, rs.status_event_id COLLATE "C")))'
)
_SET_BEST = ",\n        ".join(
    f"{column} = CASE WHEN {_OUTRANKS} THEN excluded.{column} ELSE rs.{column} END"
    for column in _FOLLOW_BEST
)

# Merge, never overwrite: the guard keeps state right even if two transactions touch the
# same recipient (a submission and a receipt on two workers, or a rebalance overlap).
_UPSERT_RECIPIENTS = f"""
WITH upserted AS (
    INSERT INTO recipient_status AS rs (
        provider, message_id, recipient, status, status_rank, is_final, provider_status,
        status_event_id, status_at, submitted_at, first_event_at, last_event_at, event_count)
    SELECT u.provider, u.message_id, u.recipient, u.status, u.status_rank, u.is_final,
           u.provider_status, u.status_event_id, u.status_at, u.submitted_at,
           u.first_event_at, u.last_event_at, u.event_count
      FROM json_to_recordset($1::json)
           AS u(provider text, message_id text, recipient text, status text,
                status_rank smallint, is_final boolean, provider_status text,
                status_event_id text, status_at timestamptz, submitted_at timestamptz,
                first_event_at timestamptz, last_event_at timestamptz, event_count integer)
        ON CONFLICT (provider, message_id, recipient) DO UPDATE SET
        {_SET_BEST},
        submitted_at = coalesce(rs.submitted_at, excluded.submitted_at),
        first_event_at = least(rs.first_event_at, excluded.first_event_at),
        last_event_at = greatest(rs.last_event_at, excluded.last_event_at),
        event_count = rs.event_count + excluded.event_count,
        updated_at = now()
), outbox AS (
    INSERT INTO status_outbox (key, value)
    SELECT key, value FROM json_to_recordset($2::json) AS o(key text, value json)
    RETURNING id
), published AS (
    -- rows of earlier batches the broker has acknowledged since: one commit fewer each
    DELETE FROM status_outbox WHERE id = ANY($3::bigint[])
)
SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM outbox
"""

_INSERT_SUBMISSIONS = """
INSERT INTO submissions (provider, message_id, event_id, recipients, submitted_at, tags)
SELECT provider, message_id, event_id, recipients, submitted_at, coalesce(tags::jsonb, '{}')
  FROM json_to_recordset($1::json)
       AS t(provider text, message_id text, event_id text, recipients text[],
            submitted_at timestamptz, tags json)
    ON CONFLICT (provider, message_id) DO NOTHING
RETURNING provider, message_id
"""

# The listed recipients get a row (pending, if no receipt yet) carrying submitted_at.
_JOIN_LISTED = """
INSERT INTO recipient_status AS rs (provider, message_id, recipient, submitted_at)
SELECT provider, message_id, recipient, submitted_at
  FROM json_to_recordset($1::json)
       AS t(provider text, message_id text, recipient text, submitted_at timestamptz)
    ON CONFLICT (provider, message_id, recipient) DO UPDATE
   SET submitted_at = coalesce(rs.submitted_at, excluded.submitted_at), updated_at = now()
 WHERE rs.submitted_at IS NULL
"""

# Early receipts for recipients the submission does not list (another number format,
# say) are joined too: one index range scan per message.
_JOIN_UNLISTED = """
UPDATE recipient_status rs
   SET submitted_at = n.submitted_at, updated_at = now()
  FROM json_to_recordset($1::json) AS n(provider text, message_id text, submitted_at timestamptz)
 WHERE rs.provider = n.provider AND rs.message_id = n.message_id AND rs.submitted_at IS NULL
"""

_INSERT_INBOUND = """
INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, sent_at,
                              sent_at_text, received_at, raw)
SELECT provider, message_id, event_id, sender, content, sent_at, sent_at_text, received_at, raw
  FROM json_to_recordset($1::json)
       AS t(provider text, message_id text, event_id text, sender text, content text,
            sent_at timestamptz, sent_at_text text, received_at timestamptz, raw json)
    ON CONFLICT (provider, message_id) DO NOTHING
RETURNING event_id
"""


def _doc(rows: Any) -> str:
    return orjson.dumps(rows, option=JSON_OPTIONS).decode()


async def insert_receipts(
    conn: asyncpg.Connection, receipts: Sequence[DeliveryReceipt]
) -> tuple[list[DeliveryReceipt], dict[Key, Stored]]:
    """Record distinct receipts in the history; return those that were new, in arrival
    order, and the stored state of their recipients before this batch (absent: none)."""
    rows = await conn.fetch(_INSERT_RECEIPTS, _doc(receipts))
    stored: dict[Key, Stored] = {}
    duplicates: set[str] = set()
    for row in rows:
        if row["duplicate"]:
            duplicates.add(row["event_id"])
            continue
        status = row["status"]
        stored[(row["provider"], row["message_id"], row["recipient"])] = Stored(
            status=None if status is None else Status(status),
            status_at=row["status_at"],
            status_event_id=row["status_event_id"],
            submitted_at=row["submitted_at"],
            first_event_at=row["first_event_at"],
        )
    if not duplicates:
        return list(receipts), stored
    return [r for r in receipts if r.event_id not in duplicates], stored


def _outbox_doc(keys: Sequence[bytes], values: Sequence[bytes]) -> str:
    # The change is embedded verbatim: the json column keeps the exact bytes published.
    parts = [
        b'{"key":' + orjson.dumps(k.decode()) + b',"value":' + v + b"}"
        for k, v in zip(keys, values, strict=True)
    ]
    return (b"[" + b",".join(parts) + b"]").decode()


async def apply_plan(
    conn: asyncpg.Connection,
    plan: Plan,
    stored: Mapping[Key, Stored],
    published: Sequence[int] = (),
) -> list[OutboxRow]:
    """Upsert the recipients of ``plan``, queue its changes in the outbox, and delete the
    outbox rows already ``published``. ``stored`` is what :func:`insert_receipts` read
    (its ``submitted_at`` joins a recipient seen for the first time to its submission)."""
    keys = [c.key for c in plan.changes]
    values = [encode(c) for c in plan.changes]
    ids = await conn.fetchval(
        _UPSERT_RECIPIENTS,
        _doc(recipient_rows(plan, stored)),
        _outbox_doc(keys, values),
        list(published),
    )
    return list(zip(ids, keys, values, strict=True))


def recipient_rows(plan: Plan, stored: Mapping[Key, Stored]) -> list[dict[str, Any]]:
    """The ``recipient_status`` rows ``plan`` upserts, as the statement reads them."""
    return [
        {
            "provider": u.best.provider,
            "message_id": u.best.message_id,
            "recipient": u.best.recipient,
            "status": u.best.status,
            "status_rank": RANK[u.best.status],
            "is_final": u.best.status in FINAL_STATUSES,
            "provider_status": u.best.provider_status,
            "status_event_id": u.best.event_id,
            "status_at": u.best.received_at,
            "submitted_at": stored.get(u.key, _NONE).submitted_at,
            "first_event_at": u.first_at,
            "last_event_at": u.last_at,
            "event_count": u.count,
        }
        for u in plan.updates
    ]


async def insert_submissions(conn: asyncpg.Connection, submissions: Sequence[Submission]) -> int:
    """Record new submissions and join them to their recipients; return how many were new."""
    rows = await conn.fetch(_INSERT_SUBMISSIONS, _doc(submissions))
    if not rows:
        return 0
    new = {(row["provider"], row["message_id"]) for row in rows}
    listed: dict[Key, datetime] = {}
    messages: list[dict[str, Any]] = []
    for s in submissions:
        if (s.provider, s.message_id) in new:
            new.discard((s.provider, s.message_id))  # the first record of a message wins
            messages.append(
                {"provider": s.provider, "message_id": s.message_id, "submitted_at": s.submitted_at}
            )
            for recipient in s.recipients:
                listed[(s.provider, s.message_id, recipient)] = s.submitted_at
    recipients = [
        {"provider": p, "message_id": m, "recipient": r, "submitted_at": at}
        for (p, m, r), at in sorted(listed.items())
    ]
    await conn.execute(_JOIN_LISTED, _doc(recipients))
    await conn.execute(_JOIN_UNLISTED, _doc(messages))
    return len(messages)


async def insert_inbound(conn: asyncpg.Connection, inbound: Sequence[InboundMessage]) -> int:
    """Record new inbound messages; return how many were new."""
    rows = await conn.fetch(_INSERT_INBOUND, _doc(inbound))
    return len(rows)
