"""A plain ``pip install .`` (not editable) of the committed files gives a working ``confab serve``."""

from __future__ import annotations

import email.parser
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


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The committed files, and a real, non-editable install of them (dependencies: this venv's own)."""
    source, target = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("installed")
    _copy_tracked_files(source)
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
    return source, target


def test_the_installed_metadata_carries_the_license(installed: tuple[Path, Path]) -> None:
    source, target = installed
    (dist_info,) = target.glob("confab-*.dist-info")
    metadata = email.parser.Parser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
    assert metadata["License"] == "Apache-2.0"
    assert "License :: OSI Approved :: Apache Software License" in metadata.get_all("Classifier", [])
    assert metadata.get_all("License-File") == ["LICENSE"]
    license_text = (dist_info / "licenses" / "LICENSE").read_text(encoding="utf-8")
    assert license_text == (source / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert "Copyright 2026 the Confab authors" in license_text


def test_pip_install_then_serve(installed: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = installed
    packaged = {p.relative_to(target / "confab").as_posix() for p in (target / "confab").rglob("*.py")}
    expected = {
        p.relative_to(source / "confab").as_posix()
        for p in (source / "confab").rglob("*.py")
        if not p.name.startswith("test_")
    }
    assert expected <= packaged, f"left out of the package: {sorted(expected - packaged)}"
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
