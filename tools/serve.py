"""``confab serve``: the process that puts Confab together and runs it until it is told to stop.

This is the one place that knows every part: it checks the store, loads the flows
once (a bad file is reported now, a missing default flow stops the start), warns of a
model provider whose key's environment variable is not set, builds
the actor host that runs the shards (``actors.system.host``), the engine that reaches them
(``runtime.engine``) and the gRPC edge (``grpc_edge.server``), and wires the
signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the flow files.

With one edge (``server.edges``: 1) the engine and the gRPC server run in this process;
with more, this process keeps the actor host and the port, and each edge is a process
of its own with its own engine (``tools.edges``, ``tools.edge``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from confab.actors.cluster import PROBE_TIMEOUT_S, ClusterSettings
from confab.actors.settings import HostIdentity, ShardSettings
from confab.actors.system.host import ActorHost, HostError
from confab.grpc_edge import tls
from confab.grpc_edge.server import ConfabServer, EdgeSecurity
from confab.runtime import VERSION
from confab.runtime.config import ConfabConfig, ConfigError, split_password
from confab.runtime.engine import Engine
from confab.runtime.flows import FlowRegistry, UnknownFlow
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.models import ModelProvider, ModelSettings, TokenBudget, api_key
from confab.runtime.protocol import transport
from confab.runtime.protocol.security import data_plane_settings
from confab.runtime.store import Retention, StoreError, open_store
from confab.runtime.store.postgres import PostgresStore
from confab.runtime.webhooks import WebhookTarget
from confab.tools.edges import EdgeError, Edges, reserve_port

log = logging.getLogger("confab.serve")


def check_store(config: ConfabConfig) -> float:
    """Open the store and check its integrity; the seconds it took (StoreError names the problem).

    SQLite's check reads every page; for PostgreSQL, opening is the check there is: the
    server is reached, the credentials work and the schema is at a version this Confab knows."""
    started = time.perf_counter()
    store = open_store(config.store_location, synchronous=config.store.synchronous)
    try:
        check = getattr(store, "check_integrity", None)
        if check is not None:
            check()
    finally:
        store.close()
    return time.perf_counter() - started


def check_flows(config: ConfabConfig) -> None:
    """Load the flows once, saying which loaded and which files were skipped (and why)."""
    flows, _ = load_flows(config.flows.dirs, providers=[p.name for p in config.models.providers], log=log)
    try:
        FlowRegistry(flows, config.flows.default)
    except UnknownFlow as exc:
        raise ConfigError(f"flows.default: {exc}") from exc


def check_model_keys(config: ConfabConfig) -> None:
    """Warn, once per provider, of a key that is not there: every call to that provider would
    fail (``no_key``). The line names the variable, never a value."""
    for provider in config.models.providers:
        if not api_key(provider.api_key_env):
            log.warning(
                "model provider %r: the environment variable %s that holds its key is not set or"
                " empty; every call to it will fail (no_key) until the server starts with it set",
                provider.name,
                provider.api_key_env,
            )


def store_password_to_environment(config: ConfabConfig) -> None:
    """Move a password out of the store's URL into ``PGPASSWORD``, where libpq also reads it.

    Called once, before any process is started: the shards inherit the environment (readable
    only by their own user), while the URL, which travels to every shard in its settings and
    which logs and the Admin API show, no longer carries the password at all."""
    if not config.store_is_database:
        return
    url, password = split_password(config.store.path)
    if password:
        os.environ["PGPASSWORD"] = password
        config.store.path = url


def shard_settings(config: ConfabConfig, run_dir: Path) -> ShardSettings:
    # store_location is the URL store_password_to_environment left: pickled to every shard.
    return ShardSettings(
        store_path=config.store_location,
        synchronous=config.store.synchronous,
        resident_limit=config.engine.resident_conversations_per_shard,
        default_flow=config.flows.default,
        retention=Retention(
            config.engine.turns_kept, config.engine.idempotency_window_s, config.engine.history_retention_s
        ),
        flow_dirs=tuple(str(Path(d).resolve()) for d in config.flows.dirs),
        webhooks=tuple(
            WebhookTarget(w.name, w.url, w.timeout_s, w.retries, tuple(w.headers.items()))
            for w in config.flows.webhooks
        ),
        data_address=f"unix:{run_dir}/s{{index}}.{{generation}}.sock",
        cluster_data_address=f"tcp:{config.cluster.advertise}:0" if config.cluster.enabled else "",
        host=config.cluster.host_name,
        vshards=config.cluster.vshards,
        lease_s=config.cluster.lease_s,
        renew_every_s=config.cluster.renew_every_s,
        data_plane=data_plane_settings(config),
        analytics=config.engine.analytics,
        models=model_settings(config),
    )


def model_settings(config: ConfabConfig) -> ModelSettings:
    """The model providers and budgets of ``config``, as the shards get them (no key: each shard
    reads it from the environment variable each provider names)."""
    models = config.models
    return ModelSettings(
        providers=tuple(
            ModelProvider(
                name=p.name,
                base_url=p.base_url,
                model=p.model,
                api_key_env=p.api_key_env,
                timeout_s=p.timeout_s,
                retries=p.retries,
                max_tokens=p.max_tokens,
                temperature=p.temperature,
                stream=p.stream,
                max_duration_s=p.max_duration_s,
            )
            for p in models.providers
        ),
        budget=TokenBudget(models.budget.tokens_per_day, tuple(sorted(models.budget.tenants.items()))),
        max_concurrent=models.max_concurrent,
    )


def actor_host(config: ConfabConfig, run_dir: Path) -> ActorHost:
    """The host of this process's shards; in a cluster, a member of the store's member table."""
    cluster = config.cluster
    data_plane = data_plane_settings(config)
    members: PostgresStore | None = None
    if cluster.enabled:
        # Its own small pool, failing fast: a heartbeat that cannot be written within a second is
        # a heartbeat missed, and the next one is due anyway.
        members = PostgresStore(config.store_location, connect_timeout_s=2, pool_timeout_s=1.0)
    return ActorHost(
        shard_settings(config, run_dir),
        config.shard_count,
        identity=HostIdentity(cluster.host_name, config.server.listen, os.getpid(), time.time_ns()),
        cluster=ClusterSettings(
            name=cluster.name,
            vshards=cluster.vshards,
            heartbeat_every_s=cluster.heartbeat_every_s,
            lost_after_s=cluster.lost_after_s,
        ),
        members=members,
        reach=functools.partial(transport.probe, settings=data_plane, timeout=PROBE_TIMEOUT_S)
        if cluster.enabled
        else None,
    )


async def run(config: ConfabConfig, *, log_level: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the process's exit code (``log_level``: --log-level, for edges)."""
    # The shards' sockets live in a directory of this process's own (mode 0700).
    run_dir = Path(tempfile.mkdtemp(prefix="confab-"))
    host: ActorHost | None = None
    store_password_to_environment(config)
    edges = config.edge_count
    try:
        # Reads key and certificate files: a bad one stops the start before the store is touched.
        security = EdgeSecurity.from_config(config)
        # A port in use stops the start here, in one line, with no process to stop.
        tls.check_address(config.server.listen)
        config.store_dir.mkdir(parents=True, exist_ok=True)
        seconds = check_store(config)
        log.info("store %s checked in %.3fs", config.store_shown, seconds)
        check_flows(config)
        check_model_keys(config)
        # The first thing that starts a process: this one still has a single thread.
        host = actor_host(config, run_dir)
        if edges > 1:
            # Held from now to the end: the edges' port (tools.edges says why).
            port, address = reserve_port(config.server.listen)
        else:
            server = ConfabServer(config, Engine(config, host), security)
    except (StoreError, ConfigError, OSError) as exc:
        print(f"confab: {exc}", file=sys.stderr)
        if host is not None:
            host.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        return 1
    try:
        if edges > 1:
            with port:
                return await _serve_edges(config, host, Edges(config, host, edges, address, log_level))
        return await _serve(config, server)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def _serve_edges(config: ConfabConfig, host: ActorHost, edges: Edges) -> int:
    try:
        directory = await asyncio.to_thread(host.start, edges.directory_from_any_thread)
        edges.accept(directory)
        await edges.start()
    except (HostError, EdgeError, TimeoutError) as exc:
        print(f"confab: {exc}", file=sys.stderr)
        await asyncio.to_thread(host.close)
        return 1
    stop = _stop_on_signals()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, edges.reload_flows)
    print(
        f"confab {VERSION} serving on {edges.address} (pid {os.getpid()}, data {config.data_dir},"
        f" {config.shard_count} shards, {edges.count} edges: pids {' '.join(map(str, edges.pids()))})",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: draining %d edges", edges.count)
    started = time.monotonic()
    cfg = config.server
    handoff = config.cluster.handoff_timeout_s if config.cluster.enabled else 0.0
    await edges.stop(cfg.shutdown_grace_s + handoff + config.engine.shard_timeout_s + 5.0)
    log.info("edges stopped in %.1fs; stopping the shards", time.monotonic() - started)
    started = time.monotonic()
    await asyncio.to_thread(host.close)
    log.info("shards and actor system stopped in %.1fs", time.monotonic() - started)
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _serve(config: ConfabConfig, server: ConfabServer) -> int:
    try:
        await server.start()
    except (OSError, ConfigError, HostError) as exc:  # ConfigError: a key or certificate that does not load
        print(f"confab: {exc}", file=sys.stderr)
        return 1
    stop = _stop_on_signals()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()  # held, so a running reload is not garbage-collected

    def reload_flows() -> None:
        task = loop.create_task(server.reload_flows())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_flows)
    print(
        # The pid SIGHUP goes to: the actor processes are named `confab serve` too.
        f"confab {VERSION} serving on {server.address} (pid {os.getpid()}, data {config.data_dir},"
        f" {config.shard_count} shards)",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    return 0
