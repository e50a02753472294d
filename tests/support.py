"""A real ``confab serve`` process for tests, the means to find every process it started,
and the one way tests run the ``confab`` command (to its end, or in a pseudo-terminal).

Each server runs with a unique ``CONFAB_TEST_RUN`` environment variable, inherited
by every process Thespian forks (even the Admin, which detaches into its own
session), so a test finds exactly the processes of *its* server, never others.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import pexpect
import psutil
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.flows.authoring.dialogues import conversation_for_variants
from confab.runtime.flows.execution.catalog import load_flows
from confab.tools.price_service import PriceService

SERVING_LINE = re.compile(r"serving on (\S+):(\d+)")
EXPECT_TIMEOUT_S = 15  # for any one expected piece of a terminal program's output


# The confab command ------------------------------------------------------------------


def confab_argv(*args: str) -> list[str]:
    """``confab ARGS`` as this test run's interpreter runs it (no installed script needed)."""
    return [sys.executable, "-m", "confab.tools.cli", *args]


def serve_args(*args: str, data_dir: Path | str, listen: str = "127.0.0.1:0") -> list[str]:
    """The arguments of ``confab serve`` on ``listen`` with its store in ``data_dir``, then ``args``."""
    return ["serve", "--listen", listen, "--data-dir", str(data_dir), *args]


def run_confab(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``confab ARGS`` to its end; its output as text. ``env`` adds to os.environ."""
    return subprocess.run(
        confab_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def spawn_confab(
    *args: str, env: Mapping[str, str] | None = None, dimensions: tuple[int, int] = (40, 200)
) -> pexpect.spawn[str]:
    """``confab ARGS`` in a pseudo-terminal, as a person would run it; wide, so no line wraps."""
    program, *argv = confab_argv(*args)
    return pexpect.spawn(
        program,
        argv,
        encoding="utf-8",
        timeout=EXPECT_TIMEOUT_S,
        dimensions=dimensions,
        env={**os.environ, **(env or {})},
    )


def type_line(child: pexpect.spawn[str], line: str, *expected: str, prompt: str) -> str:
    """Type ``line``; expect each of ``expected`` in order, then ``prompt``; return what came last."""
    child.sendline(line)
    for text in expected:
        child.expect_exact(text)
    child.expect_exact(prompt)
    return str(child.before)


def exit_status(child: pexpect.spawn[str]) -> int | None:
    """Wait for the program in ``child`` to end; its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


# Servers -------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test restarts where clients expect it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_marked(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if (
                process.environ().get("CONFAB_TEST_RUN") == marker
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_until_gone(marker: str, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        alive = processes_marked(marker)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


class ServerProcess:
    """``confab serve`` in a process group of its own, its output (stdout and stderr) in a file.

    A file, not a pipe: a server that logs every call would block once a pipe nobody
    reads is full.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        shards: int = 2,
        edges: int = 1,  # one edge in the server's own process, whatever the machine's default
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,  # over os.environ, for this server only
        listen: str = "127.0.0.1:0",  # a fixed port lets a test restart a server where clients expect it
        log_level: str = "WARNING",
    ) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.shards = shards
        self.edges = edges
        self.extra = list(extra)
        self.env = dict(env or {})
        self.log_level = log_level
        self.marker = uuid.uuid4().hex
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.log_path = data_dir.parent / f"confab-serve-{self.marker[:12]}.log"

    @property
    def output(self) -> list[str]:
        """Every line the server wrote so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {**os.environ, **self.env, "CONFAB_TEST_RUN": self.marker, "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                confab_argv(
                    *serve_args(
                        "--shards",
                        str(self.shards),
                        "--edges",
                        str(self.edges),
                        "--log-level",
                        self.log_level,
                        *self.extra,
                        data_dir=self.data_dir,
                        listen=self.listen,
                    )
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so a test can kill exactly that
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output:
                match = SERVING_LINE.search(line)
                if match:
                    self.address = f"{match.group(1)}:{match.group(2)}"
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("confab serve did not start:\n" + "".join(self.output))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stub(self) -> pb_grpc.MCPEngineStub:
        return pb_grpc.MCPEngineStub(self.channel())

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the server's process group (only what this test started)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """End the server however it can be ended, and make sure none of its processes remain."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()
        for process in wait_until_gone(self.marker, 10.0):
            process.kill()  # a leak: the test that owns this server will fail on it


def status_details(error: grpc.RpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason of a failed call, and the fields its BadRequest names."""
    status = rpc_status.from_call(error)
    reason, fields = "", []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return reason, fields


def message(
    conversation_id: str, text: str, *, tenant: str = "acme", user: str = "user-1"
) -> pb.ProcessMessageRequest:
    return pb.ProcessMessageRequest(
        tenant_context={"tenant_id": tenant},
        conversation_id=conversation_id,
        user_id=user,
        content={"text": text},
    )


def state_request(conversation_id: str, tenant: str = "acme") -> pb.GetConversationStateRequest:
    return pb.GetConversationStateRequest(
        tenant_context={"tenant_id": tenant}, conversation_id=conversation_id
    )


def price_webhook_config(path: Path, price_url: str, *, timeout_s: float = 3.0, more_yaml: str = "") -> Path:
    """A config whose ``price`` webhook (the pizza flow's) points at a test price service."""
    path.write_text(
        more_yaml
        + "flows:\n  webhooks:\n"
        + f"    - {{name: price, url: '{price_url}', timeout_s: {timeout_s}, retries: 0, headers: {{}}}}\n"
    )
    return path


@contextlib.contextmanager
def pizza_server(
    directory: Path, *, timeout_s: float = 3.0, prices: PriceService | None = None, more_yaml: str = ""
) -> Iterator[tuple[ServerProcess, PriceService]]:
    """A one-shard server (every conversation shares it) and the price service its pizza flow asks:
    ``prices``, started and stopped here, else one answering at once; ``more_yaml`` adds to the
    server's config."""
    prices = (prices or PriceService()).start()
    config = price_webhook_config(
        directory / "confab.yaml", prices.url, timeout_s=timeout_s, more_yaml=more_yaml
    )
    server = ServerProcess(directory / "data", shards=1, extra=["--config", str(config)])
    try:
        yield server.start(), prices
    finally:
        server.stop()
        prices.stop()


class GatedPrices(PriceService):
    """The pizza flow's price service, answering only while its gate is open: a turn that asks it
    while it is held stays suspended on its shard, and the messages behind it wait in order.
    A request waits at most ``hold_s`` for the gate."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s = hold_s
        self.asked = threading.Semaphore(0)  # one release per request received
        self._gate = threading.Event()
        self._gate.set()

    def before_answering(self) -> None:
        self.asked.release()
        self._gate.wait(self.hold_s)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def stop(self) -> None:
        self._gate.set()
        super().stop()


def plain_greeting_id(prefix: str) -> str:
    """A conversation id that the pizza flow's greeting experiment puts in the plain variant
    (the variant follows from a hash of tenant and conversation id)."""
    flows, _ = load_flows()
    pizza_flow = next(f for f in flows if f.flow_id == "pizza")
    return conversation_for_variants(pizza_flow, "acme", {"greeting": "plain"}, prefix).conversation_id


def pizza(conversation: str, text: str = "", payload: str = "") -> pb.ProcessMessageRequest:
    """A message for the bundled pizza flow (the processing hint force_flow picks it)."""
    request = message(conversation, text)
    request.content.payload = payload
    request.processing_hints.force_flow = "pizza"
    return request
