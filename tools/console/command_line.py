"""The ``confab console`` subcommand: its options, and the web server they start."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from confab.tools.connection import DEFAULT_TARGET

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_LISTEN = "127.0.0.1:8080"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``console`` subcommand, added to ``confab``'s subcommands."""
    console = commands.add_parser("console", help="web console over the admin service and metrics")
    console.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT", help="the server")
    console.add_argument("--tls-ca", metavar="FILE", help="PEM CA to verify the server: use TLS")
    console.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where the console serves HTTP (default {DEFAULT_LISTEN}: this machine only)",
    )
    console.add_argument(
        "--secure-cookie",
        action="store_true",
        help="mark the session cookie Secure (behind a proxy that serves the console over HTTPS)",
    )


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        host, port = split_listen(args.listen)
        tls_ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    except (ValueError, OSError) as exc:
        print(f"confab console: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(host):
        print(
            f"confab console: WARNING: listening on {host}, beyond this machine: anyone who reaches it"
            " can try keys there; serve it over HTTPS (a proxy, and --secure-cookie)",
            file=sys.stderr,
        )

    def channel() -> grpc.aio.Channel:
        if tls_ca is None:
            return grpc.aio.insecure_channel(args.target)
        return grpc.aio.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=tls_ca))

    # The web server is loaded only to serve: every other confab command starts without it.
    from confab.tools.console.app import make_app

    app = make_app(args.target, channel, secure_cookie=args.secure_cookie)
    try:
        asyncio.run(_serve(app, host, port, args.target))
    except OSError as exc:
        print(f"confab console: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(app: web.Application, host: str, port: int, target: str) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        print(f"confab console serving on http://{shown}:{bound} for {target}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
