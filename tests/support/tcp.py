"""A loopback TCP proxy a test can cut or freeze: a dependency that crashes or goes silent."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """Forwards 127.0.0.1:`port` to `target` (host, port). `down()` stops listening and cuts
    every connection through it (a crashed server: connections refused); `freeze()` keeps the
    connections open and forwards nothing more (a blackholed one); `up()` undoes either, on the
    same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, 0
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        self.frozen = False
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

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if not self.frozen:
                        sink.write(data)
                        await sink.drain()
            sink.transport.abort()

        task = asyncio.current_task()
        if task is not None:
            self._pipes.add(task)
        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers -= {writer, upstream_writer}
            if task is not None:
                self._pipes.discard(task)
