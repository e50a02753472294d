"""One edge process of ``confab serve --edges N``: gRPC, guards, an engine and links to every shard.

Started afresh by the host process (``tools.edges``), never forked from it, with one
end of a socket pair of its own (``runtime.protocol.host_channel``). It dies with the
host (``actors.system.lifecycle.die_with_parent``), reads its configuration from the
socket, and serves on the port the host holds for its edges, beside the others
(SO_REUSEPORT). SIGTERM drains it as it drains a single-process server; SIGHUP is the
host's (it has one edge reload the flows for every shard).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import sys

from confab.actors.system import lifecycle
from confab.grpc_edge.access_log import configure_logging
from confab.grpc_edge.server import ConfabServer, EdgeSecurity
from confab.runtime import eventloop
from confab.runtime.config import ConfabConfig, config_from_mapping
from confab.runtime.engine import Engine
from confab.runtime.engine.remote_host import RemoteShardHost
from confab.runtime.protocol import host_channel
from confab.runtime.protocol.host_channel import Channel

log = logging.getLogger("confab.edge")


def main() -> int:
    lifecycle.die_with_parent(int(os.environ[host_channel.HOST_PID_VARIABLE]))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the host's signal; a terminal's hangup is the host's too
    channel = Channel(socket.socket(fileno=int(os.environ[host_channel.CHANNEL_FD_VARIABLE])))
    try:
        kind, index, mapping, log_level = channel.receive()
    except EOFError:
        return 1
    assert kind == host_channel.INIT
    config = config_from_mapping(mapping)
    configure_logging(config.logging, log_level)
    scrape_port_for_edge(config, index)
    return eventloop.run(serve_edge(config, index, channel))


def scrape_port_for_edge(config: ConfabConfig, index: int) -> None:
    """Edge ``index`` serves Prometheus on the configured port + ``index``: each edge's figures
    are its own, and no two processes can serve one scrape port."""
    listen = config.telemetry.metrics_listen
    if listen and index:
        host, _, port = listen.rpartition(":")
        if int(port):
            config.telemetry.metrics_listen = f"{host}:{int(port) + index}"
    port = os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "")
    if port.isdigit() and index:
        os.environ["OTEL_EXPORTER_PROMETHEUS_PORT"] = str(int(port) + index)


async def serve_edge(config: ConfabConfig, index: int, channel: Channel) -> int:
    host = RemoteShardHost(channel)
    try:
        server = ConfabServer(config, Engine(config, host), EdgeSecurity.from_config(config), share_port=True)
        await server.start()
    except Exception as exc:
        log.debug("edge %d could not start", index, exc_info=True)
        channel.send(host_channel.FAILED, str(exc) or type(exc).__name__)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload_flows() -> None:
        task = loop.create_task(server.reload_flows())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    host.on_reload = functools.partial(loop.call_soon_threadsafe, reload_flows)
    # The host is gone (and this process about to be killed with it): stop taking calls.
    host.on_host_gone = functools.partial(loop.call_soon_threadsafe, stop.set)
    channel.send(host_channel.READY, server.address, os.getpid())
    await stop.wait()
    log.info("edge %d shutting down", index)
    await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
