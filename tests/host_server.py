"""``confab serve`` on one host of a :class:`~tests.hosts.Hosts` network, serving on that host's address."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.hosts import Hosts

REPOSITORY = Path(__file__).resolve().parents[1]  # the confab/ in it is the package the server runs
SERVING_LINE = re.compile(r"serving on (\S+):(\d+)")
DEFAULT_PORT = 50051  # every host has its own ports: the same one on each is free


class HostServer:
    """One server on host ``host``: its log in ``data_dir``'s parent, its processes those of the host."""

    def __init__(
        self,
        hosts: Hosts,
        host: int,
        data_dir: Path,
        *,
        port: int = DEFAULT_PORT,
        shards: int = 1,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,  # over os.environ, for this server only
        log_level: str = "WARNING",
    ) -> None:
        self.hosts = hosts
        self.host = host
        self.data_dir = data_dir
        self.port = port
        self.shards = shards
        self.extra = list(extra)
        self.env = dict(env or {})
        self.log_level = log_level
        self.log_path = data_dir.parent / f"confab-serve-host{host}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def address(self) -> str:
        """``HOST:PORT`` clients in any namespace reach this server at."""
        return f"{self.hosts.address(self.host)}:{self.port}"

    @property
    def output(self) -> str:
        """What the server wrote since its latest start (a restart appends to the same log)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 30.0) -> HostServer:
        """Start the server and return once it says it serves (RuntimeError with its log if not)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "confab.tools.cli",
            "serve",
            "--listen",
            self.address,
            "--data-dir",
            str(self.data_dir),
            "--shards",
            str(self.shards),
            "--log-level",
            self.log_level,
            *self.extra,
        ]
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = self.hosts.spawn(self.host, argv, log=self.log_path, env=env, cwd=REPOSITORY)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if SERVING_LINE.search(self.output):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.hosts.kill(self.host)
        raise RuntimeError(f"confab serve did not start on host {self.host}:\n{self.output}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL what is left on the host; the exit code (None: it had to be killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        code = self.process.poll() if self.process is not None else None
        self.hosts.kill(self.host)
        return code
