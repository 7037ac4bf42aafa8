"""Set-based SQL of status-projection: a few statements per batch, never one per event.

Every function runs inside the caller's transaction. Arrays go in through ``unnest``;
rows that must be locked in a stable order (concurrent workers, rebalances) are sent
sorted by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from consumers.projection import Key, Plan, Stored
from smsrx.codec import encode
from smsrx.events import DeliveryReceipt, InboundMessage, Submission
from smsrx.statuses import FINAL_STATUSES, RANK, Status

__all__ = ["OutboxRow", "apply_plan", "insert_inbound", "insert_receipts", "insert_submissions"]

OutboxRow = tuple[int, bytes, bytes]
"""(outbox id, record key, record value)."""

# History first: ON CONFLICT DO NOTHING is the exactly-once check. The same statement
# returns, for each new receipt, the stored state of its recipient (before this batch).
_INSERT_RECEIPTS = """
WITH input AS (
    SELECT *
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::boolean[], $8::timestamptz[], $9::text[])
           WITH ORDINALITY
           AS t(event_id, provider, message_id, recipient, status, provider_status,
                synthetic, received_at, raw, ord)
), inserted AS (
    INSERT INTO status_events (event_id, provider, message_id, recipient, status,
                               provider_status, synthetic, received_at, raw)
    SELECT event_id, provider, message_id, recipient, status, provider_status,
           synthetic, received_at, raw::jsonb
      FROM input
     ORDER BY ord
        ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, provider, message_id, recipient
)
SELECT i.event_id, i.provider, i.message_id, i.recipient,
       rs.status, rs.status_at, rs.status_event_id, rs.first_event_at,
       coalesce(rs.submitted_at, s.submitted_at) AS submitted_at
  FROM inserted i
  LEFT JOIN recipient_status rs
         ON rs.provider = i.provider AND rs.message_id = i.message_id
        AND rs.recipient = i.recipient
  LEFT JOIN submissions s ON s.provider = i.provider AND s.message_id = i.message_id
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
           u.provider_status, u.status_event_id, u.status_at, s.submitted_at,
           u.first_event_at, u.last_event_at, u.event_count
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::smallint[],
                  $6::boolean[], $7::text[], $8::text[], $9::timestamptz[],
                  $10::timestamptz[], $11::timestamptz[], $12::integer[])
           WITH ORDINALITY
           AS u(provider, message_id, recipient, status, status_rank, is_final,
                provider_status, status_event_id, status_at, first_event_at,
                last_event_at, event_count, ord)
      LEFT JOIN submissions s ON s.provider = u.provider AND s.message_id = u.message_id
     ORDER BY u.ord
        ON CONFLICT (provider, message_id, recipient) DO UPDATE SET
        {_SET_BEST},
        submitted_at = coalesce(rs.submitted_at, excluded.submitted_at),
        first_event_at = least(rs.first_event_at, excluded.first_event_at),
        last_event_at = greatest(rs.last_event_at, excluded.last_event_at),
        event_count = rs.event_count + excluded.event_count,
        updated_at = now()
), outbox AS (
    INSERT INTO status_outbox (event_id, key, value)
    SELECT event_id, key, value
      FROM unnest($13::text[], $14::bytea[], $15::bytea[]) WITH ORDINALITY
           AS o(event_id, key, value, ord)
     ORDER BY ord
    RETURNING id, key, value
)
SELECT id, key, value FROM outbox ORDER BY id
"""

_INSERT_SUBMISSIONS = """
INSERT INTO submissions (provider, message_id, event_id, recipients, submitted_at, tags)
SELECT provider, message_id, event_id,
       ARRAY(SELECT jsonb_array_elements_text(recipients::jsonb)), submitted_at, tags::jsonb
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
       AS t(provider, message_id, event_id, recipients, submitted_at, tags)
    ON CONFLICT (provider, message_id) DO NOTHING
RETURNING provider, message_id
"""

# The listed recipients get a row (pending, if no receipt yet) carrying submitted_at.
_JOIN_LISTED = """
INSERT INTO recipient_status AS rs (provider, message_id, recipient, submitted_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
 ORDER BY 1, 2, 3
    ON CONFLICT (provider, message_id, recipient) DO UPDATE
   SET submitted_at = coalesce(rs.submitted_at, excluded.submitted_at), updated_at = now()
 WHERE rs.submitted_at IS NULL
"""

# Early receipts for recipients the submission does not list (another number format,
# say) are joined too.
_JOIN_UNLISTED = """
UPDATE recipient_status rs
   SET submitted_at = n.submitted_at, updated_at = now()
  FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS n(provider, message_id, submitted_at)
 WHERE rs.provider = n.provider AND rs.message_id = n.message_id AND rs.submitted_at IS NULL
"""

_INSERT_INBOUND = """
INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, sent_at,
                              sent_at_text, received_at, raw)
SELECT provider, message_id, event_id, sender, content, sent_at, sent_at_text, received_at,
       raw::jsonb
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
              $6::timestamptz[], $7::text[], $8::timestamptz[], $9::text[])
       AS t(provider, message_id, event_id, sender, content, sent_at, sent_at_text,
            received_at, raw)
    ON CONFLICT (provider, message_id) DO NOTHING
RETURNING event_id
"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def insert_receipts(
    conn: asyncpg.Connection, receipts: Sequence[DeliveryReceipt]
) -> tuple[list[DeliveryReceipt], dict[Key, Stored]]:
    """Record distinct receipts in the history; return those that were new, in arrival
    order, and the stored state of their recipients before this batch."""
    rows = await conn.fetch(
        _INSERT_RECEIPTS,
        [r.event_id for r in receipts],
        [r.provider for r in receipts],
        [r.message_id for r in receipts],
        [r.recipient for r in receipts],
        [r.status.value for r in receipts],
        [r.provider_status for r in receipts],
        [r.synthetic for r in receipts],
        [r.received_at for r in receipts],
        [_json(r.raw) for r in receipts],
    )
    stored: dict[Key, Stored] = {}
    fresh: set[str] = set()
    for row in rows:
        fresh.add(row["event_id"])
        key = (row["provider"], row["message_id"], row["recipient"])
        if key not in stored:
            status = row["status"]
            stored[key] = Stored(
                status=None if status is None else Status(status),
                status_at=row["status_at"],
                status_event_id=row["status_event_id"],
                submitted_at=row["submitted_at"],
                first_event_at=row["first_event_at"],
            )
    return [r for r in receipts if r.event_id in fresh], stored


async def apply_plan(conn: asyncpg.Connection, plan: Plan) -> list[OutboxRow]:
    """Upsert the recipients of ``plan`` and queue its changes in the outbox."""
    updates = plan.updates
    bests = [u.best for u in updates]
    changes = plan.changes
    rows = await conn.fetch(
        _UPSERT_RECIPIENTS,
        [b.provider for b in bests],
        [b.message_id for b in bests],
        [b.recipient for b in bests],
        [b.status.value for b in bests],
        [RANK[b.status] for b in bests],
        [b.status in FINAL_STATUSES for b in bests],
        [b.provider_status for b in bests],
        [b.event_id for b in bests],
        [b.received_at for b in bests],
        [u.first_at for u in updates],
        [u.last_at for u in updates],
        [u.count for u in updates],
        [c.event_id for c in changes],
        [c.key for c in changes],
        [encode(c) for c in changes],
    )
    return [(row["id"], bytes(row["key"]), bytes(row["value"])) for row in rows]


async def insert_submissions(conn: asyncpg.Connection, submissions: Sequence[Submission]) -> int:
    """Record new submissions and join them to their recipients; return how many were new."""
    rows = await conn.fetch(
        _INSERT_SUBMISSIONS,
        [s.provider for s in submissions],
        [s.message_id for s in submissions],
        [s.event_id for s in submissions],
        [_json(list(s.recipients)) for s in submissions],
        [s.submitted_at for s in submissions],
        [_json(s.tags) for s in submissions],
    )
    if not rows:
        return 0
    new = {(row["provider"], row["message_id"]) for row in rows}
    listed: dict[Key, datetime] = {}
    messages: list[tuple[str, str, datetime]] = []
    for s in submissions:
        if (s.provider, s.message_id) in new:
            new.discard((s.provider, s.message_id))  # the first record of a message wins
            messages.append((s.provider, s.message_id, s.submitted_at))
            for recipient in s.recipients:
                listed[(s.provider, s.message_id, recipient)] = s.submitted_at
    await conn.execute(
        _JOIN_LISTED,
        [k[0] for k in listed],
        [k[1] for k in listed],
        [k[2] for k in listed],
        list(listed.values()),
    )
    await conn.execute(_JOIN_UNLISTED, *(list(column) for column in zip(*messages, strict=True)))
    return len(messages)


async def insert_inbound(conn: asyncpg.Connection, inbound: Sequence[InboundMessage]) -> int:
    """Record new inbound messages; return how many were new."""
    rows = await conn.fetch(
        _INSERT_INBOUND,
        [m.provider for m in inbound],
        [m.message_id for m in inbound],
        [m.event_id for m in inbound],
        [m.sender for m in inbound],
        [m.content for m in inbound],
        [m.sent_at for m in inbound],
        [m.sent_at_text for m in inbound],
        [m.received_at for m in inbound],
        [_json(m.raw) for m in inbound],
    )
    return len(rows)
