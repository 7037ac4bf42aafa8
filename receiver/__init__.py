"""The HTTPS receiver: carrier callbacks in, canonical events out to Kafka."""

from __future__ import annotations

__all__ = ["create_app", "run"]


def __getattr__(name: str) -> object:
    # Lazy, so that `import receiver.adapters` stays free of aiohttp and aiokafka.
    if name in __all__:
        from receiver import app

        return getattr(app, name)
    raise AttributeError(name)
