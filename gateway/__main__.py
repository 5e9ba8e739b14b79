"""`python -m gateway`: the HTTP API in its own process (distributed mode).

`python -m gateway token --name NAME --role ROLE` makes a new API token instead: the token goes
to stderr (give it to NAME; it is not stored anywhere), the token file's line to stdout, so
`python -m gateway token --name alice --role operator >> tokens.jsonl` adds it to a file.
"""

from __future__ import annotations

import sys
from typing import get_args

from aiohttp import web

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tokens import RoleName, file_line, new_token
from shared.runtime import run, service_parser, setup_logging, wait_for_shutdown


async def serve(settings: GatewaySettings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    try:
        await wait_for_shutdown()
    finally:
        await runner.cleanup()


def make_token(name: str, role: str) -> None:
    """Print a new token (stderr) and its token-file line (stdout)."""
    token = new_token()
    line = file_line(name, role, token)  # type: ignore[arg-type]  # argparse's choices are RoleName's values
    print(f"token for {name} ({role}), shown once: {token}", file=sys.stderr)
    print(line)


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("python -m gateway", __doc__)
    commands = parser.add_subparsers(dest="command")
    token = commands.add_parser("token", help="make an API token and print its token-file line")
    token.add_argument("--name", required=True, help="who holds it (letters, digits, . _ @ -)")
    token.add_argument("--role", required=True, choices=get_args(RoleName))
    args = parser.parse_args(argv)
    if args.command == "token":
        try:
            make_token(args.name, args.role)
        except ValueError:  # pydantic's ValidationError: a name the file would refuse
            parser.error(f"--name {args.name!r}: letters, digits and . _ @ - only, at most 64 characters")
        return
    settings = GatewaySettings()
    setup_logging(settings.log_level)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
