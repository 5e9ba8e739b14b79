"""Process plumbing shared by every service's `__main__`: logging, event loop, SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from shared.bus import MessageBus, connect_bus
from shared.metrics import serve_metrics
from shared.store import ObjectStore, open_store_for


def service_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of a service's `__main__`: `--help` prints `doc` and where its settings
    come from; a service without options of its own refuses any argument (exit 2) instead of
    starting to serve."""
    return argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings come from DERMASCAN_* environment variables (README.md, \"Configuration\").")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def shutdown_signal() -> asyncio.Event:
    """An event set when the process gets SIGTERM or SIGINT, its handlers installed now."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_shutdown() -> None:
    """Return when the process gets SIGTERM or SIGINT."""
    await shutdown_signal().wait()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on uvloop when it is installed, else on asyncio's default loop.

    DERMASCAN_UVLOOP=0 forces asyncio's loop (read here, before any settings exist, because the
    loop must be chosen before the service starts); bench/serve.py uses it to measure both.
    """
    if os.environ.get("DERMASCAN_UVLOOP", "1").lower() in {"0", "false", "no"}:
        asyncio.run(main())
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ServiceSettings(Protocol):
    broker_url: str
    store_url: str
    s3_endpoint_url: str | None
    store_connect_timeout_s: float
    store_read_timeout_s: float
    store_max_attempts: int
    broker_publish_timeout_s: float
    broker_heartbeat_s: int
    metrics_host: str
    metrics_port: int


async def serve_service(
    settings: ServiceSettings, build: Callable[[MessageBus, ObjectStore, CollectorRegistry], Service]
) -> None:
    """Run one broker-driven service process: /metrics, bus and store opened here and closed
    here, the service started, then drained on SIGTERM or SIGINT."""
    stop = shutdown_signal()  # before anything starts: a SIGTERM during start-up drains too
    registry = CollectorRegistry()
    runner = await serve_metrics(registry, settings.metrics_host,
                                 settings.metrics_port) if settings.metrics_port else None
    bus = await connect_bus(settings.broker_url, publish_timeout_s=settings.broker_publish_timeout_s,
                            heartbeat_s=settings.broker_heartbeat_s)
    store = await open_store_for(settings)
    service = build(bus, store, registry)
    try:
        starting = asyncio.ensure_future(service.start())
        halt = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, halt}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises what the start raised
            await halt
        else:  # told to stop while starting (a broker that does not answer): stop what started
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        halt.cancel()
        logging.getLogger(__name__).info("draining")
    finally:
        await service.stop()
        await bus.close()
        await store.close()
        if runner is not None:
            await runner.cleanup()
