"""A loopback TCP proxy a test can cut or freeze: a dependency that crashes or goes silent."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse


class Proxy:
    """Forwards 127.0.0.1:`port` to `target` (host, port). `down()` stops listening and cuts
    every connection through it (a crashed server: connections refused); `freeze()` keeps the
    connections open and forwards nothing more (a blackholed one); `up()` undoes either, on the
    same port.

    `blackhole()` is a network that drops every packet: the connections through it, and those
    opened until `up()`, go silent for good. No byte passes either way, and neither end hears of
    the other closing (no FIN or RST crosses a black hole), so only a heartbeat or a timeout can
    tell. After `up()` new connections work, and those that went silent stay silent: their bytes
    were lost, as they are behind a dropped route or a restarted NAT, or with TCP's retransmits
    backed off for minutes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, 0
        self.frozen = False
        self.holed = False
        self._silent: set[asyncio.StreamWriter] = set()  # client ends of the connections gone silent
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()  # the client end of each connection
        self._pipes: set[asyncio.Task[None]] = set()

    @classmethod
    def before(cls, url: str) -> Proxy:
        """A proxy (not up yet) to the server `url` names (`scheme://user:password@host:port/...`)."""
        parsed = urlparse(url)
        return cls((parsed.hostname or "127.0.0.1", parsed.port or 5672))

    def reroute(self, url: str) -> str:
        """`url` with this proxy's loopback port for its host and port: the same server, reached
        through the proxy (after `up()`, which picks the port)."""
        parsed = urlparse(url)
        return parsed._replace(netloc=f"{parsed.username}:{parsed.password}@127.0.0.1:{self.port}").geturl()

    async def up(self) -> None:
        self.frozen = self.holed = False
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                      reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    def freeze(self) -> None:
        self.frozen = True

    def blackhole(self) -> None:
        self.holed = True
        self._silent |= self._clients

    async def close(self) -> None:
        await self.down()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        self._clients.add(writer)
        if self.holed:
            self._silent.add(writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if not self.frozen and writer not in self._silent:
                        sink.write(data)
                        await sink.drain()
            if writer not in self._silent:  # a close crosses no black hole
                sink.transport.abort()

        task = asyncio.current_task()
        if task is not None:
            self._pipes.add(task)
        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers -= {writer, upstream_writer}
            self._clients.discard(writer)
            self._silent.discard(writer)
            if task is not None:
                self._pipes.discard(task)
