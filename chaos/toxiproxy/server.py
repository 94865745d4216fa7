"""The server process: ``python -m chaos.toxiproxy [--host H] [--port N] [--config F]``.

``--host`` must be an IP address and ``--port`` 0..65535; anything else is a
usage error (exit code 2) before anything listens.

Prints exactly one line on stdout once the API is bound
(``toxiproxy listening on HOST:PORT``) so a parent can wait for it; logs go to
stderr. SIGTERM and SIGINT close the API, every listener and every
connection, then exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from chaos.toxiproxy import VERSION
from chaos.toxiproxy.api import make_app
from chaos.toxiproxy.errors import ApiError
from chaos.toxiproxy.model import Collection

log = logging.getLogger("chaos.toxiproxy")
READY_PREFIX = "toxiproxy listening on "


def _port(text: str) -> int:
    """An API port: 0..65535 (Python's socket layer would silently wrap 99999 to 34463)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _host(text: str) -> str:
    """An IP address to bind the API to (a name could resolve to several, or to none)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0)"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.toxiproxy",
        description=f"Embedded Toxiproxy-compatible server ({VERSION}).",
    )
    parser.add_argument(
        "--host", type=_host, default="127.0.0.1", help="API IP address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=_port, default=8474, help="API port, 0..65535; 0 picks a free one"
    )
    parser.add_argument("--config", type=Path, help="JSON list of proxies (the /populate format)")
    parser.add_argument(
        "--debug-endpoints",
        action="store_true",
        help="expose GET /debug/state (task, connection and fd counts) for leak tests",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    collection = Collection()
    if args.config is not None:
        try:
            await collection.populate(json.loads(args.config.read_text()))
        except (OSError, ValueError, ApiError) as exc:
            print(f"toxiproxy: cannot load {args.config}: {exc}", file=sys.stderr)
            collection.stop_all()
            return 2
    app = make_app(collection, debug_endpoints=args.debug_endpoints)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        print(f"toxiproxy: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        collection.stop_all()
        return 1
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}{args.host}:{port}", flush=True)
    log.info("toxiproxy %s API on %s:%s", VERSION, args.host, port)
    await stop.wait()
    log.info("stopping")
    collection.stop_all()
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    if not args.no_uvloop:
        try:
            import uvloop  # optional: a faster data plane
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(serve(args))
