"""Typed keys of the receiver application's shared resources."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from receiver.dedup import Dedup
from receiver.pipeline import Pipeline
from receiver.publisher import Publisher
from receiver.replay import Replayer
from smsrx.settings import Settings

__all__ = [
    "DB_POOL",
    "DEDUP",
    "OUTCOME",
    "PIPELINE",
    "PROVIDER",
    "PUBLISHER",
    "REPLAYER",
    "SETTINGS",
]

SETTINGS = web.AppKey("settings", Settings)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
DEDUP = web.AppKey("dedup", Dedup)
PUBLISHER = web.AppKey("publisher", Publisher)
PIPELINE = web.AppKey("pipeline", Pipeline)
REPLAYER = web.AppKey("replayer", Replayer)
"""The replayer of this process's own spool; absent when the spool is turned off."""

PROVIDER = web.RequestKey("provider", str)
"""The provider a callback request is for (the ``provider`` metrics label)."""
OUTCOME = web.RequestKey("outcome", str)
"""How a request ended (the ``outcome`` metrics label)."""
