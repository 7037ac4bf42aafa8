"""Erasing one person's data (a data-subject request): what is stored about a phone
number, and the one transaction that removes it.

Rows are kept and anonymised, not deleted: a replay of a topic (within its retention)
then finds the event already applied and writes nothing back, and the analytics, which
hold only countries, stay as they are. In every table the number is replaced with one
new token (:func:`smsrx.privacy.erasure_token`), so the person's rows still belong
together; texts become ``''`` and carriers' raw payloads ``{}``.

The suppression list is the exception: ``suppressions`` and ``optout_events`` keep the
number, the record that this person must never be messaged again (docs/inbound.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from smsrx.phones import country_alpha3
from smsrx.privacy import erasure_token

__all__ = ["CHANGES", "KEPT", "Erasure", "erase", "survey"]

_ATTEMPTS = 3

CHANGES: Mapping[str, str] = {
    "inbound_messages": "sender replaced by the token, text '' and raw payload '{}'",
    "status_events": "recipient replaced by the token, raw payload '{}' (also of the other "
    "receipts of a callback that names the number)",
    "recipient_status": "recipient replaced by the token",
    "submissions": "the number replaced by the token in recipients",
    "status_outbox": "status changes not yet published: recipient replaced by the token",
    "poll_schedule": "recipient replaced by the token; its polling ends",
}
"""Each table that holds the number, and what erasure does to its rows, in the order of
the transaction (the status-projection's order: history before current state)."""

KEPT: Mapping[str, str] = {
    "suppressions": "the number's opt-out state",
    "optout_events": "its opt-outs and opt-ins",
}
"""The tables that keep the number: it must never be messaged again."""

# The person's receipts, and the receipts of the same callbacks whose raw payload names
# the number (a callback may list several recipients); $1 is the number, {digits} the
# parameter holding its digits without '+', as raw payloads write it.
_RECEIPTS = """
WITH callbacks AS (SELECT DISTINCT provider, message_id FROM status_events WHERE recipient = $1)
SELECT e.event_id
  FROM status_events e JOIN callbacks c USING (provider, message_id)
 WHERE e.recipient = $1 OR (e.raw::text <> '{{}}' AND strpos(e.raw::text, {digits}) > 0)
"""

# $1 the number, E.164; $2 its digits without '+'.
_COUNT = {
    "inbound_messages": "SELECT count(*) FROM inbound_messages WHERE sender = $1",
    "status_events": f"SELECT count(*) FROM ({_RECEIPTS.format(digits='$2')}) AS receipts",
    "recipient_status": "SELECT count(*) FROM recipient_status WHERE recipient = $1",
    "submissions": "SELECT count(*) FROM submissions WHERE $1 = ANY(recipients)",
    "status_outbox": "SELECT count(*) FROM status_outbox WHERE right(key, length($1) + 1) = '/' || $1",
    "poll_schedule": "SELECT count(*) FROM poll_schedule WHERE recipient = $1",
}
_KEPT_COUNT = {
    "suppressions": "SELECT count(*) FROM suppressions WHERE phone = $1",
    "optout_events": "SELECT count(*) FROM optout_events WHERE phone = $1",
}
# $1 the number, $2 the token, $3 the number's digits.
_ERASE = {
    "inbound_messages": """
UPDATE inbound_messages
   SET sender = $2, content = '', raw = '{}'::json, text_erased_at = coalesce(text_erased_at, now())
 WHERE sender = $1""",
    "status_events": f"""
UPDATE status_events
   SET recipient = CASE WHEN recipient = $1 THEN $2 ELSE recipient END, raw = '{{}}'::json
 WHERE event_id IN ({_RECEIPTS.format(digits="$3")})""",
    # Locked in key order, as the status-projection locks them, so as not to deadlock.
    "recipient_status": """
WITH locked AS (
    SELECT provider, message_id, recipient FROM recipient_status
     WHERE recipient = $1 ORDER BY provider, message_id FOR UPDATE)
UPDATE recipient_status r
   -- A pending recipient is never expired later: the sweep would publish the token as a
   -- recipient, which the receipt schema does not allow.
   SET recipient = $2, updated_at = now(),
       expiry_published_at = CASE WHEN r.is_final THEN r.expiry_published_at ELSE 'infinity' END
  FROM locked l
 WHERE (r.provider, r.message_id, r.recipient) = (l.provider, l.message_id, l.recipient)""",
    "submissions": """
UPDATE submissions SET recipients = array_replace(recipients, $1, $2)
 WHERE $1 = ANY(recipients)""",
    "status_outbox": """
UPDATE status_outbox SET key = replace(key, $1, $2), value = replace(value::text, $1, $2)::json
 WHERE right(key, length($1) + 1) = '/' || $1""",
    # The poller would otherwise ask the carrier about the token.
    "poll_schedule": """
UPDATE poll_schedule
   SET recipient = $2, due_at = NULL, done_reason = coalesce(done_reason, 'erased'),
       done_at = coalesce(done_at, now())
 WHERE recipient = $1""",
}


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing a number changes (or changed), table by table."""

    phone: str
    """The number, E.164."""
    rows: dict[str, int]
    """Rows changed (or to be changed) per table of :data:`CHANGES`."""
    kept: dict[str, int]
    """Rows that keep the number per table of :data:`KEPT`."""
    token: str | None = None
    """What the number became; None before the erasure, or when it changed nothing."""

    @property
    def total(self) -> int:
        """Rows changed (or to be changed) in every table."""
        return sum(self.rows.values())


def _arity(sql: str) -> int:
    """How many parameters ``sql`` takes: its highest ``$n``."""
    return max(int(n) for n in re.findall(r"\$(\d)", sql))


async def _count(
    conn: asyncpg.Connection, queries: Mapping[str, str], phone: str
) -> dict[str, int]:
    params = (phone, phone.removeprefix("+"))
    return {
        name: int(await conn.fetchval(sql, *params[: _arity(sql)])) for name, sql in queries.items()
    }


async def survey(conn: asyncpg.Connection, phone: str) -> Erasure:
    """What erasing ``phone`` would change, without changing anything."""
    return Erasure(phone, await _count(conn, _COUNT, phone), await _count(conn, _KEPT_COUNT, phone))


async def _erase_once(conn: asyncpg.Connection, phone: str, token: str) -> Erasure:
    rows = {}
    async with conn.transaction():
        for name, sql in _ERASE.items():
            params = (phone, token, phone.removeprefix("+"))
            status = await conn.execute(sql, *params[: _arity(sql)])
            rows[name] = int(status.rsplit(" ", 1)[-1])  # "UPDATE n"
        kept = await _count(conn, _KEPT_COUNT, phone)
    return Erasure(phone, rows, kept, token if sum(rows.values()) else None)


async def erase(conn: asyncpg.Connection, phone: str) -> Erasure:
    """Erase ``phone`` in one transaction; return what changed and the token it became.

    A transaction PostgreSQL rolls back to resolve a conflict with a worker writing the
    same rows (a deadlock) is tried again, up to three times.
    """
    token = erasure_token(country_alpha3(phone))
    attempt = 1
    while True:
        try:
            return await _erase_once(conn, phone, token)
        except asyncpg.TransactionRollbackError:
            if attempt == _ATTEMPTS:
                raise
            attempt += 1
