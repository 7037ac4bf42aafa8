"""A TCP proxy in front of the test PostgreSQL, to make it unreachable and bring it back."""

from __future__ import annotations

import asyncio
import contextlib

from smsrx.cli.dev.process import free_port
from smsrx.settings import Settings


class Proxy:
    """A TCP proxy in front of PostgreSQL that can be cut (every connection reset, new ones
    refused) and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def before(cls, settings: Settings) -> tuple[Proxy, Settings]:
        """A proxy in front of the database of ``settings`` (cut until restored), and the
        settings that reach the database through it."""
        host_port = settings.database_url.split("@", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        proxy = cls(host, int(port))
        url = settings.database_url.replace(host_port, f"127.0.0.1:{proxy.port}")
        return proxy, settings.with_(database_url=url)

    async def restore(self) -> None:
        if self.server is not None:
            return
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
