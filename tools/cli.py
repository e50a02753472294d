"""The ``confab`` command.

    confab serve [--listen HOST:PORT] [--data-dir DIR] [--config FILE] [--shards N]

``serve`` prints one line once it is serving. SIGTERM or SIGINT drains it: health
turns NOT_SERVING, in-flight calls finish (bounded by ``server.shutdown_grace_s``),
every actor process stops, and it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from ..runtime import VERSION
from ..runtime.config import ConfabConfig, ConfigError, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confab", description="Confab conversation runtime")
    parser.add_argument("--version", action="version", version=f"confab {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:50051)")
    serve.add_argument("--data-dir", metavar="DIR", help="where the SQLite store lives (default ./var)")
    serve.add_argument("--config", metavar="FILE", help="YAML file over the bundled defaults")
    serve.add_argument("--shards", type=int, metavar="N", help="shard processes (default: one per CPU)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.shards is not None and args.shards < 1:
        print("confab: --shards must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_config(
            args.config,
            **{"server.listen": args.listen, "data_dir": args.data_dir, "engine.shards": args.shards},
        )
    except ConfigError as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run_server(config))


async def _run_server(config: ConfabConfig) -> int:
    from ..grpc_edge.server import ConfabServer  # grpc is imported only when serving

    server = ConfabServer(config)
    try:
        await server.start()
    except OSError as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(
        f"confab {VERSION} serving on {server.address} (data {config.data_dir}, {config.shard_count} shards)",
        flush=True,
    )
    await stop.wait()
    logging.getLogger("confab").info("shutting down")
    await server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
