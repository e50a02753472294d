"""The engine: what the edge calls. Routes each conversation to its shard.

``Engine.start()`` brings up the Thespian actor system (a supervisor and its
shards), ``Engine.close()`` takes it down; in between, every call is async and
never blocks the event loop. A conversation always lands on the same shard
(a stable hash of tenant and conversation id), so its commands stay in order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thespian.actors import ActorSystem

from ..actors import lifecycle
from ..actors.messages import (
    FlowsReloaded,
    ReloadFlows,
    ResidentAmong,
    RestartShard,
    ScanStored,
    ShardDirectory,
    ShardSettings,
    ShardStatistics,
    StartShards,
    StoredPage,
)
from ..actors.supervisor import SupervisorActor
from . import telemetry
from .bridge import LinkStatistics, ShardDirectoryView, ShardLink
from .config import ConfabConfig
from .errors import InvalidArgument, Unavailable
from .events import EventHub
from .model import ConversationKey, ConversationState, InboundMessage, ResetResult, StateResult, TurnResult
from .webhooks import WebhookTarget
from .wire import Command, CommandKind, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    shards: int
    shard_restarts: int
    started_at: float
    links: tuple[LinkStatistics, ...]


@dataclass(frozen=True, slots=True)
class FlowReload:
    """What a reload of the flow files did across the shards."""

    loaded: list[str]  # "flow@version", now the latest of each flow
    skipped: list[str]  # files that did not load, as "PATH:LINE: message"
    failed: list[str]  # shards that could not reload


def new_message_id() -> str:
    return uuid.uuid4().hex


class Engine:
    def __init__(self, config: ConfabConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self._system: Any = None
        self._directory: ShardDirectoryView | None = None
        self._links: list[ShardLink] = []
        self.events = EventHub()

    # Lifecycle (blocking; call before serving and after the server stopped) ------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.config
        cfg.store_path.parent.mkdir(parents=True, exist_ok=True)
        lifecycle.tie_actor_processes_to_this_one()
        self._system = ActorSystem(
            "multiprocTCPBase",
            capabilities={"Admin Port": _free_port()},
            transientUnique=True,
            logDefs=_thespian_logging(),
        )
        try:
            supervisor = self._system.createActor(SupervisorActor)
            settings = ShardSettings(
                store_path=str(cfg.store_path.resolve()),
                synchronous=cfg.store.synchronous,
                turns_kept=cfg.engine.turns_kept,
                resident_limit=cfg.engine.resident_conversations_per_shard,
                default_flow=cfg.flows.default,
                flow_dirs=tuple(str(Path(d).resolve()) for d in cfg.flows.dirs),
                webhooks=webhook_targets(cfg),
            )
            directory = self._system.ask(supervisor, StartShards(cfg.shard_count, settings), 30.0)
            if not isinstance(directory, ShardDirectory):
                raise Unavailable("the actor system did not start its shards")
            self._directory = ShardDirectoryView(supervisor, directory)
            self._links = [
                ShardLink(
                    index,
                    self._system,
                    self._directory,
                    loop,
                    max_batch=cfg.engine.max_commands_per_batch,
                    max_queued=cfg.engine.max_queued_per_shard,
                    timeout_s=cfg.engine.shard_timeout_s,
                )
                for index in range(len(directory.addresses))
            ]
            for link in self._links:
                link.want_lifecycle = lambda: self.events.active
                link.on_lifecycle = self.events.publish_lifecycle
        except BaseException:
            self._system.shutdown()
            self._system = None
            raise

    def close(self) -> None:
        """Let queued commands finish, then stop every actor process."""
        for link in self._links:
            link.close(timeout=self.config.engine.shard_timeout_s)
        if self._system is not None:
            self._system.shutdown()
            self._system = None

    # Requests --------------------------------------------------------------------

    def shard_for(self, key: ConversationKey) -> int:
        return zlib.crc32(f"{key.tenant_id}\x00{key.conversation_id}".encode()) % len(self._links)

    def submit(self, commands: list[Command], deadline: float | None = None) -> list[asyncio.Future[Outcome]]:
        """Queue commands in this order; commands of one conversation run in this order.

        ``deadline`` is a ``time.monotonic()`` value: a command still queued then is
        not run (it fails with DEADLINE_EXCEEDED).
        """
        if not self._links:
            raise Unavailable("the engine is not running")
        traceparent = telemetry.current_traceparent()  # None (and cheap) unless tracing is on
        if traceparent is not None:
            for command in commands:
                command.trace = traceparent
        by_shard: dict[int, list[int]] = {}
        for i, command in enumerate(commands):
            by_shard.setdefault(self.shard_for(command.key), []).append(i)
        futures: list[asyncio.Future[Outcome] | None] = [None] * len(commands)
        for shard, positions in by_shard.items():
            submitted = self._links[shard].submit([commands[i] for i in positions], deadline)
            for i, future in zip(positions, submitted, strict=True):
                futures[i] = future
                if self.events.active:  # an operator is watching (Admin.TailEvents)
                    future.add_done_callback(functools.partial(self._publish, commands[i], shard))
        return [f for f in futures if f is not None]

    def _publish(self, command: Command, shard: int, future: asyncio.Future[Outcome]) -> None:
        if not future.cancelled():
            error = future.exception()
            self.events.publish_outcome(command, shard, error if error is not None else future.result())

    async def scan_stored(self, tenant_id: str, after: ConversationKey | None, limit: int) -> StoredPage:
        """A page of stored conversations, read by shard 0 (every shard opens the same store)."""
        if not self._links:
            raise Unavailable("the engine is not running")
        start = (after.tenant_id, after.conversation_id) if after else None
        page = await self._links[0].request_control(
            ScanStored(tenant_id, start, limit), expect=StoredPage, timeout_s=10.0
        )
        if not isinstance(page, StoredPage):
            raise Unavailable("no shard could read the store")
        return page

    async def resident_among(self, keys: list[ConversationKey]) -> set[ConversationKey]:
        """Which of ``keys`` are in memory, asking each shard about its own."""
        by_shard: dict[int, list[tuple[str, str]]] = {}
        for key in keys:
            by_shard.setdefault(self.shard_for(key), []).append((key.tenant_id, key.conversation_id))
        answers = await asyncio.gather(
            *(
                self._links[i].request_control(ResidentAmong(tuple(k)), expect=ResidentAmong, timeout_s=5.0)
                for i, k in by_shard.items()
            )
        )
        return {ConversationKey(*k) for a in answers if isinstance(a, ResidentAmong) for k in a.keys}

    async def run(self, command: Command, deadline: float | None = None) -> Outcome:
        """Run one command; errors are raised, results returned."""
        outcome = await self.submit([command], deadline)[0]
        return outcome

    async def process(
        self, key: ConversationKey, message: InboundMessage, *, message_id: str, deadline: float | None = None
    ) -> TurnResult:
        result = await self.run(Command(CommandKind.TURN, message_id, key, message), deadline)
        assert isinstance(result, TurnResult)
        return result

    async def get_state(self, key: ConversationKey, *, deadline: float | None = None) -> ConversationState:
        result = await self.run(Command(CommandKind.GET_STATE, new_message_id(), key), deadline)
        assert isinstance(result, StateResult)
        return result.state

    async def reset(
        self, key: ConversationKey, reason: str, *, message_id: str, deadline: float | None = None
    ) -> ResetResult:
        result = await self.run(Command(CommandKind.RESET, message_id, key, reason), deadline)
        assert isinstance(result, ResetResult)
        return result

    # Introspection -------------------------------------------------------------

    async def shard_statistics(self) -> list[ShardStatistics | Exception]:
        futures = [link.request_statistics() for link in self._links]
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [r if isinstance(r, ShardStatistics | Exception) else Unavailable(str(r)) for r in results]

    def shard_addresses(self) -> list[str]:
        """Each shard's actor address, as text, by index."""
        return [str(a) for a in self._directory.current.addresses] if self._directory else []

    async def check_supervisor(self) -> str | None:
        """None if the supervisor answers (the actor system works), else what went wrong."""
        system, directory = self._system, self._directory
        if system is None or directory is None:
            return "the actor system is not running"

        def ask() -> bool:
            with system.private() as context:
                return directory.refresh(context) is not None

        answered = await asyncio.to_thread(ask)
        return None if answered else "the supervisor did not answer"

    async def ask_shard_of(
        self, key: ConversationKey, message: Any, expect: type, timeout_s: float = 5.0
    ) -> Any:
        """Send a control message to the shard that hosts ``key``; its answer (or an error)."""
        if not self._links:
            raise Unavailable("the engine is not running")
        answer = await self._links[self.shard_for(key)].request_control(
            message, expect=expect, timeout_s=timeout_s
        )
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def restart_shard(self, index: int) -> None:
        """Stop shard ``index``; the supervisor starts a new one (an operator's drill)."""
        system, directory = self._system, self._directory
        if system is None or directory is None:
            raise Unavailable("the engine is not running")
        if not 0 <= index < len(self._links):
            last = len(self._links) - 1
            raise InvalidArgument(f"there is no shard {index}; shards are 0..{last}", field="shard")

        def ask() -> Any:
            with system.private() as context:
                return context.ask(directory.supervisor, RestartShard(index), 5.0)

        if not isinstance(await asyncio.to_thread(ask), ShardDirectory):
            raise Unavailable("the supervisor did not answer")

    async def reload_flows(self) -> FlowReload:
        """Every shard loads the flow files again (running conversations keep their version)."""
        futures = [
            link.request_control(ReloadFlows(), expect=FlowsReloaded, timeout_s=30.0) for link in self._links
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        reloaded = [r for r in results if isinstance(r, FlowsReloaded)]
        return FlowReload(
            loaded=sorted({f"{flow}@{version}" for r in reloaded for flow, version in r.versions}),
            skipped=sorted({problem for r in reloaded for problem in r.problems}),
            failed=[str(r) for r in results if not isinstance(r, FlowsReloaded)],
        )

    def statistics(self) -> EngineStatistics:
        directory = self._directory.current if self._directory else None
        return EngineStatistics(
            shards=len(self._links),
            shard_restarts=directory.restarts if directory else 0,
            started_at=self.started_at,
            links=tuple(link.statistics() for link in self._links),
        )

    @property
    def running(self) -> bool:
        return bool(self._links)


def webhook_targets(config: ConfabConfig) -> tuple[WebhookTarget, ...]:
    return tuple(
        WebhookTarget(w.name, w.url, w.timeout_s, w.retries, tuple(w.headers.items()))
        for w in config.flows.webhooks
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _thespian_logging() -> dict[str, Any]:
    # Thespian always runs a logger process; route its records to stderr at WARNING.
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": "WARNING"}},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
