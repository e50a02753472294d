"""``python -m confab`` is the ``confab`` command, as ``python -m confab.tools.cli`` is."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

COMMANDS = ("serve", "keys", "flows", "chat", "shell", "call", "cluster", "price-service")


def test_the_package_runs_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["confab", "--help"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_module("confab", run_name="__main__")
    assert stopped.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: confab")
    for command in COMMANDS:
        assert command in printed


@pytest.mark.integration  # starts an interpreter
@pytest.mark.parametrize("module", ["confab", "confab.tools.cli"])
def test_python_m_prints_the_commands(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: confab")
    for command in COMMANDS:
        assert command in done.stdout
