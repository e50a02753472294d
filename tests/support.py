"""A real ``confab serve`` process for tests, and the means to find every process it started.

Each server runs with a unique ``CONFAB_TEST_RUN`` environment variable, inherited
by every process Thespian forks (even the Admin, which detaches into its own
session), so a test finds exactly the processes of *its* server, never others.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import psutil

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.price_service import PriceService

SERVING_LINE = re.compile(r"serving on (\S+):(\d+)")


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
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,  # over os.environ, for this server only
        listen: str = "127.0.0.1:0",  # a fixed port lets a test restart a server where clients expect it
        log_level: str = "WARNING",
    ) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.shards = shards
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
                [
                    sys.executable,
                    "-m",
                    "confab.tools.cli",
                    "serve",
                    "--listen",
                    self.listen,
                    "--data-dir",
                    str(self.data_dir),
                    "--shards",
                    str(self.shards),
                    "--log-level",
                    self.log_level,
                    *self.extra,
                ],
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
def pizza_server(directory: Path, *, timeout_s: float = 3.0) -> Iterator[tuple[ServerProcess, PriceService]]:
    """A one-shard server (every conversation shares it) and the price service its pizza flow asks."""
    prices = PriceService().start()
    config = price_webhook_config(directory / "confab.yaml", prices.url, timeout_s=timeout_s)
    server = ServerProcess(directory / "data", shards=1, extra=["--config", str(config)])
    try:
        yield server.start(), prices
    finally:
        server.stop()
        prices.stop()


def pizza(conversation: str, text: str = "", payload: str = "") -> pb.ProcessMessageRequest:
    """A message for the bundled pizza flow (the processing hint force_flow picks it)."""
    request = message(conversation, text)
    request.content.payload = payload
    request.processing_hints.force_flow = "pizza"
    return request
