"""Load on several edges at once, counted so a test can check what its faults cost.

    python -m tests.cluster_load --edge 10.161.7.2:50051 --edge 10.161.7.3:50051 \\
        --workers 8 --conversations 32 --duration 30 --out results.json

Each worker owns some conversations and sends them ProcessMessage calls in turn, one
at a time, so a conversation's messages never overlap. Every request carries a
``metadata.request_id`` of its own, the server's idempotency key: when an attempt ends
in UNAVAILABLE or DEADLINE_EXCEEDED (a dead, cut or dropped edge), the same request,
same key, goes to the next edge after a short backoff, until it is answered or
``give_up_s`` has passed (then it counts as failed). A request that timed out may
still have been applied. So where every edge honours the key (one store behind them),
each conversation's applied count lies between ``acknowledged`` and ``acknowledged +
failed``: a retry of an applied request is answered as a replay (counted in
``replayed``) and not applied again.

Times are ``time.monotonic()`` readings, the clock every process on the machine shares,
so a test compares them with its own readings (e.g. when it killed a host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import message, state_request

REPOSITORY = Path(__file__).resolve().parents[1]
# As docs/api.md's retry policy: CANCELLED too, which a stopping server answers to calls it had
# received but not started (grpc/grpc#41785).
RETRYABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")
# A restarted edge is tried again within a second, not after gRPC's default backoff of up to 2 minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
PROGRESS_EVERY_S = 0.5
GENERATOR_COMMAND = (sys.executable, "-m", "tests.cluster_load")  # run from REPOSITORY


@dataclass(frozen=True)
class LoadPlan:
    edges: tuple[str, ...]  # HOST:PORT each
    conversations: tuple[str, ...]  # unique to the run: the counts read back are theirs alone
    workers: int
    duration_s: float
    tenant: str = "acme"
    text: str = "load"
    attempt_timeout_s: float = 2.0  # one attempt's deadline: how long a cut edge holds a request
    give_up_s: float = 20.0  # from a request's first attempt to its being counted as failed
    backoff_s: float = 0.05  # before a retry, doubling up to max_backoff_s
    max_backoff_s: float = 0.5
    retry_codes: tuple[str, ...] = RETRYABLE_CODES
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # prefix of every request_id

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("no edge to send to")
        if self.workers < 1 or len(self.conversations) < self.workers:
            raise ValueError(f"{self.workers} workers need at least as many conversations")
        if len(set(self.conversations)) != len(self.conversations):
            raise ValueError("a conversation is named twice")

    def assignments(self) -> list[tuple[str, ...]]:
        """Worker ``w``'s conversations: every ``workers``-th, starting at the ``w``-th."""
        return [self.conversations[w :: self.workers] for w in range(self.workers)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadPlan:
        as_tuples = {k: tuple(data[k]) for k in ("edges", "conversations", "retry_codes")}
        return cls(**{**data, **as_tuples})


def conversation_names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


@dataclass
class ConversationLoad:
    acknowledged: int = 0  # OK replies
    replayed: int = 0  # of those, replies the server marked as a repeat of an applied request
    failed: int = 0  # requests given up, or refused with a code not retried
    retries: int = 0  # attempts beyond each request's first
    ack_times: list[float] = field(default_factory=list)
    acks_by_edge: dict[str, int] = field(default_factory=dict)  # which edge answered, HOST:PORT
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, "CODE: details")


@dataclass
class LoadResult:
    plan: LoadPlan
    started: float  # the first request was sent
    stopped: float  # no request was started after this
    finished: float  # every request in flight at ``stopped`` was answered or given up
    cpu_s: float  # the generator's own CPU time, all threads, from start to finish
    attempts: int
    conversations: dict[str, ConversationLoad]

    @property
    def acknowledged(self) -> int:
        return sum(c.acknowledged for c in self.conversations.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.conversations.values())

    @property
    def retries(self) -> int:
        return sum(c.retries for c in self.conversations.values())

    def throughput(self) -> float:
        """Acknowledged messages per second of load."""
        return self.acknowledged / max(self.stopped - self.started, 1e-9)

    def cpu_per_attempt_ms(self) -> float:
        return 1000 * self.cpu_s / max(self.attempts, 1)

    def longest_silence(self, conversation: str) -> float:
        """The longest time the conversation went without an ack while load ran (start and stop count)."""
        times = self.conversations[conversation].ack_times
        end = max([self.stopped, *times])
        return max(b - a for a, b in itertools.pairwise([self.started, *times, end]))

    def silences(self) -> dict[str, float]:
        return {c: self.longest_silence(c) for c in self.conversations}

    def silence_p50(self) -> float:
        return statistics.median(self.silences().values())

    def silence_max(self) -> float:
        return max(self.silences().values())

    def summary(self) -> str:
        return (
            f"acknowledged {self.acknowledged}, failed {self.failed}, retries {self.retries}, "
            f"{self.throughput():.0f}/s, longest silence p50 {self.silence_p50():.2f}s "
            f"max {self.silence_max():.2f}s, "
            f"generator CPU {self.cpu_per_attempt_ms():.2f} ms per attempt"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "plan": self.plan.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        conversations = {
            name: ConversationLoad(**{**c, "failures": [tuple(f) for f in c["failures"]]})
            for name, c in data["conversations"].items()
        }
        fields = {k: v for k, v in data.items() if k not in ("plan", "conversations")}
        return cls(plan=LoadPlan.from_json(data["plan"]), conversations=conversations, **fields)


class _Generator:
    def __init__(self, plan: LoadPlan, stop: asyncio.Event, report_progress: bool) -> None:
        self.plan = plan
        self.stop = stop
        self.report_progress = report_progress
        self.records = {c: ConversationLoad() for c in plan.conversations}
        self.attempts = 0
        self.channels = [grpc.aio.insecure_channel(edge, options=CHANNEL_OPTIONS) for edge in plan.edges]
        self.stubs = [pb_grpc.MCPEngineStub(channel) for channel in self.channels]

    async def run(self) -> LoadResult:
        cpu_before = time.process_time()
        started = time.monotonic()
        stop_at = started + self.plan.duration_s
        workers = [asyncio.create_task(self._worker(w, own)) for w, own in enumerate(self.plan.assignments())]
        progress = asyncio.create_task(self._report_progress()) if self.report_progress else None
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=max(stop_at - time.monotonic(), 0))
            self.stop.set()
            stopped = time.monotonic()
            await asyncio.gather(*workers)
        finally:
            for task in [*workers, *([progress] if progress else [])]:
                task.cancel()
            for channel in self.channels:
                await channel.close()
        return LoadResult(
            plan=self.plan,
            started=started,
            stopped=stopped,
            finished=time.monotonic(),
            cpu_s=time.process_time() - cpu_before,
            attempts=self.attempts,
            conversations=self.records,
        )

    async def _worker(self, worker: int, conversations: Sequence[str]) -> None:
        edge = worker % len(self.stubs)  # workers start spread over the edges
        for sequence in itertools.count():
            for conversation in conversations:
                if self.stop.is_set():
                    return
                request_id = f"{self.plan.run_id}:{conversation}:{sequence}"
                edge = await self._deliver(conversation, request_id, edge)

    async def _deliver(self, conversation: str, request_id: str, edge: int) -> int:
        """Send one request until it is answered or given up; return the edge to use next."""
        plan, record = self.plan, self.records[conversation]
        request = message(conversation, plan.text, tenant=plan.tenant)
        request.metadata.request_id = request_id
        give_up_at = time.monotonic() + plan.give_up_s
        backoff = plan.backoff_s
        first = True
        while True:
            if not first:
                record.retries += 1
            first = False
            self.attempts += 1
            deadline = max(min(plan.attempt_timeout_s, give_up_at - time.monotonic()), 0.01)
            try:
                reply = await self.stubs[edge].ProcessMessage(request, timeout=deadline)
            except grpc.aio.AioRpcError as error:
                code = error.code().name
                if code not in plan.retry_codes or time.monotonic() + backoff >= give_up_at:
                    record.failed += 1
                    record.failures.append((time.monotonic(), f"{code}: {error.details()}"))
                    return edge
                edge = (edge + 1) % len(self.stubs)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, plan.max_backoff_s)
                continue
            record.acknowledged += 1
            record.ack_times.append(time.monotonic())
            answered_by = plan.edges[edge]
            record.acks_by_edge[answered_by] = record.acks_by_edge.get(answered_by, 0) + 1
            if reply.performance_metrics.cache_status == "replayed":
                record.replayed += 1
            return edge

    async def _report_progress(self) -> None:
        """A line now and then on stdout, so a test sees how far the load got."""
        while True:
            acknowledged = sum(r.acknowledged for r in self.records.values())
            failed = sum(r.failed for r in self.records.values())
            line = f"progress acknowledged={acknowledged} failed={failed} attempts={self.attempts}\n"
            sys.stdout.write(line)  # one write: a reader never sees the line without its end
            sys.stdout.flush()
            await asyncio.sleep(PROGRESS_EVERY_S)


async def generate(
    plan: LoadPlan, stop: asyncio.Event | None = None, *, report_progress: bool = False
) -> LoadResult:
    """Run ``plan`` in this event loop until its duration passes or ``stop`` is set.

    ``report_progress`` prints a line on stdout every half second (what :class:`LoadProcess` reads).
    """
    return await _Generator(plan, stop or asyncio.Event(), report_progress).run()


def applied_counts(edge: str, conversations: Iterable[str], tenant: str = "acme") -> dict[str, int]:
    """Each conversation's message count as the server behind ``edge`` has it (0: it has none)."""
    with grpc.insecure_channel(edge) as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        counts = {}
        for conversation in conversations:
            try:
                reply = stub.GetConversationState(state_request(conversation, tenant), timeout=20)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                counts[conversation] = 0
            else:
                counts[conversation] = reply.conversation_state.message_count
        return counts


# The generator as a process of its own --------------------------------------------------


@dataclass(frozen=True)
class Progress:
    acknowledged: int
    failed: int
    attempts: int


class LoadProcess:
    """``python -m tests.cluster_load`` in the root namespace, off the test process's CPU.

    ``directory`` receives ``plan.json``, ``results.json`` and ``load.log`` (its output).
    """

    def __init__(self, plan: LoadPlan, directory: Path) -> None:
        self.plan = plan
        self.directory = directory
        self.plan_path = directory / "plan.json"
        self.results_path = directory / "results.json"
        self.log_path = directory / "load.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LoadProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.plan_path.write_text(json.dumps(self.plan.to_json()))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*GENERATOR_COMMAND, "--plan", str(self.plan_path), "--out", str(self.results_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY,
                start_new_session=True,
            )
        return self

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def progress(self) -> Progress:
        """How far the load got, as of the generator's latest progress line."""
        complete = self.output.split("\n")[:-1]  # the last may still be being written
        lines = [line for line in complete if line.startswith("progress ")]
        if not lines:
            return Progress(0, 0, 0)
        fields = dict(part.split("=", 1) for part in lines[-1].split()[1:])
        return Progress(int(fields["acknowledged"]), int(fields["failed"]), int(fields["attempts"]))

    def wait_for_progress(self, *, acknowledged: int = 0, failed: int = 0, timeout: float = 30.0) -> Progress:
        """Return once at least so many were acknowledged and failed (RuntimeError if the load ends first)."""
        deadline = time.monotonic() + timeout
        while True:
            progress = self.progress()
            if progress.acknowledged >= acknowledged and progress.failed >= failed:
                return progress
            assert self.process is not None, "not started"
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the load did not reach {acknowledged} acknowledged and {failed} failed:\n{self.output}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Start no new request; the ones in flight finish, then the results are written."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float | None = None) -> LoadResult:
        """Wait for the generator to end and return its results (RuntimeError with its output if not)."""
        assert self.process is not None, "not started"
        if timeout is None:
            timeout = self.plan.duration_s + self.plan.give_up_s + 30
        code = self.process.wait(timeout)
        if code != 0 or not self.results_path.exists():
            raise RuntimeError(f"the load generator exited with {code}:\n{self.output}")
        return LoadResult.from_json(json.loads(self.results_path.read_text()))

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# Command line ---------------------------------------------------------------------------


def _plan_from_arguments(args: argparse.Namespace) -> LoadPlan:
    if args.plan:
        return LoadPlan.from_json(json.loads(Path(args.plan).read_text()))
    if not args.edge:
        raise SystemExit("give --plan FILE or at least one --edge HOST:PORT")
    run_id = uuid.uuid4().hex[:12]
    prefix = args.prefix or f"load-{run_id}-"
    return LoadPlan(
        edges=tuple(args.edge),
        conversations=conversation_names(prefix, args.conversations or 2 * args.workers),
        workers=args.workers,
        duration_s=args.duration,
        tenant=args.tenant,
        attempt_timeout_s=args.attempt_timeout,
        give_up_s=args.give_up,
        backoff_s=args.backoff,
        run_id=run_id,
    )


async def _run_until_signalled(plan: LoadPlan) -> LoadResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    return await generate(plan, stop, report_progress=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", metavar="FILE", help="a LoadPlan as JSON, instead of the options below")
    parser.add_argument("--edge", action="append", metavar="HOST:PORT", help="an edge (repeat for each)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--conversations", type=int, help="how many (default: twice the workers)")
    parser.add_argument("--prefix", help="of the conversation names (default: load-<run id>-)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--attempt-timeout", type=float, default=2.0, help="seconds, per attempt")
    parser.add_argument("--give-up", type=float, default=20.0, help="seconds, per request")
    parser.add_argument("--backoff", type=float, default=0.05, help="seconds before the first retry")
    parser.add_argument("--out", metavar="FILE", help="write the LoadResult there as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(_run_until_signalled(_plan_from_arguments(args)))
    if args.out:
        Path(args.out).write_text(json.dumps(result.to_json()))
    print(result.summary(), flush=True)


if __name__ == "__main__":
    main()
