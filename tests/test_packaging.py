"""A plain ``pip install .`` (not editable) of the committed files gives a working ``confab serve``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .support import SERVING_LINE, wait_until_gone

REPO = Path(__file__).resolve().parent.parent


def test_pip_install_then_serve(tmp_path: Path) -> None:
    source = tmp_path / "source"
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
    )

    marker = uuid.uuid4().hex
    workdir = tmp_path / "elsewhere"  # nothing of the source tree around
    workdir.mkdir()
    server = subprocess.Popen(
        [
            str(venv / "bin" / "confab"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--shards",
            "1",
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CONFAB_TEST_RUN": marker},
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        lines = []
        while (line := server.stdout.readline()) and not SERVING_LINE.search(line):
            lines.append(line)
        match = SERVING_LINE.search(line)
        assert match, "".join(lines)
        with grpc.insecure_channel(f"{match.group(1)}:{match.group(2)}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert (workdir / "data" / "confab.sqlite3").exists()
        server.terminate()
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 9)
            server.wait(10)
        assert wait_until_gone(marker, 5.0) == []
