"""A plain ``pip install .`` (not editable) of the committed files gives a working ``confab serve``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import SERVING_LINE, confab_argv, serve_args, wait_until_gone

pytestmark = pytest.mark.integration  # every test here starts a server or a process

REPO = Path(__file__).resolve().parent.parent


def _copy_tracked_files(destination: Path) -> None:
    """The files a fresh clone has (symlinks as symlinks), and nothing else."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        origin, copy = REPO / name, destination / name
        if not (origin.is_symlink() or origin.is_file()):
            continue  # deleted in the work tree, not yet committed
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            os.symlink(os.readlink(origin), copy)
        else:
            shutil.copy2(origin, copy)


def test_pip_install_then_serve(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "installed"
    _copy_tracked_files(source)
    # A real, non-editable install of the package (its dependencies are this venv's own).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
    )
    installed = {p.relative_to(target / "confab").as_posix() for p in (target / "confab").rglob("*.py")}
    expected = {
        p.relative_to(source / "confab").as_posix()
        for p in (source / "confab").rglob("*.py")
        if not p.name.startswith("test_")
    }
    assert expected <= installed, f"left out of the package: {sorted(expected - installed)}"
    assert (target / "confab" / "py.typed").exists() and (
        target / "confab" / "config" / "default.yaml"
    ).exists()

    marker = uuid.uuid4().hex
    workdir = tmp_path / "elsewhere"  # nothing of the source tree around
    workdir.mkdir()
    env = {**os.environ, "CONFAB_TEST_RUN": marker, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import confab.runtime.engine as m; print(m.__file__)"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(target)), where  # the installed copy, not this checkout
    server = subprocess.Popen(
        confab_argv(*serve_args("--shards", "1", data_dir="data")),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
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
