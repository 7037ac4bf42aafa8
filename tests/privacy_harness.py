"""What the personal-data tests share (tests/test_privacy*.py): an Orange receipt
callback naming numbers, and a search of every table for a text."""

from __future__ import annotations

import asyncpg
import orjson


def orange_receipt(message_id: str, *numbers: str, status: str = "DeliveredToTerminal") -> bytes:
    """An Orange deliveryInfoNotification body: one deliveryInfo per number, or a list of them."""
    infos = [{"address": f"tel:{n}", "deliveryStatus": status} for n in numbers]
    note = {"callbackData": message_id, "deliveryInfo": infos[0] if len(infos) == 1 else infos}
    return orjson.dumps({"deliveryInfoNotification": note})


async def tables_holding(conn: asyncpg.Connection, text: str) -> dict[str, int]:
    """The tables with a row whose text holds ``text``, and how many rows."""
    names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    found = {}
    for name in (row["tablename"] for row in names):
        count = await conn.fetchval(
            f'SELECT count(*) FROM "{name}" t WHERE strpos(t::text, $1) > 0', text
        )
        if count:
            found[name] = count
    return found
