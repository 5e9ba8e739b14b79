"""`python -m gateway`: the HTTP API in its own process (distributed mode)."""

from __future__ import annotations

from aiohttp import web

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.runtime import run, setup_logging, wait_for_shutdown


async def serve(settings: GatewaySettings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    try:
        await wait_for_shutdown()
    finally:
        await runner.cleanup()


def main() -> None:
    settings = GatewaySettings()
    setup_logging(settings.log_level)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
