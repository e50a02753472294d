"""Every ``confab`` command the README shows in a shell block, run as written against a real server.

A README command is either run here, or named in ``COVERED_ELSEWHERE`` with the test that
runs it instead (a cluster of hosts, PostgreSQL, TLS, a terminal). A command in neither
fails the first test, so the README cannot show a command nobody ran. What a run changes
is only what stands in for the reader's own things: the server's address for
127.0.0.1:50051 (where ``make serve`` listens), the bundled flows for ``my-flows/`` and
``next/``, the server's store for ``var/confab.sqlite3``, and a free port for the price
service; ``[--dot]`` runs without and with ``--dot``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, free_port, message, pizza, price_webhook_config

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
KEY = "readme-example-key"


@dataclass(frozen=True)
class Run:
    says: str = ""  # the output contains this
    replace: dict[str, str] = field(default_factory=dict)  # README text -> what this run uses
    background: bool = False  # started before the others, stopped after them


# README command (its first words) -> how it is run here.
RUN: dict[str, Run] = {
    "confab call --list": Run(says="mcp.engine.v2.MCPEngine/ProcessMessage"),
    "confab call mcp.engine.v2.MCPEngine/ProcessMessage": Run(says='"message_count": 1'),
    "confab call grpc.health.v1.Health/Check": Run(says="SERVING"),
    "confab keys new --tenant acme --role admin": Run(says="tenant: acme"),
    "confab keys new --role operator": Run(says="operator"),
    "echo -n $KEY | confab keys hash": Run(says=hashlib.sha256(KEY.encode()).hexdigest()),
    "confab flows validate my-flows/": Run(replace={"my-flows/": "config/flows/"}),
    "confab flows show pizza": Run(says="confirm"),
    "confab price-service": Run(
        replace={"confab price-service": "confab price-service --listen {prices}"}, background=True
    ),
    "confab flows test tests/dialogues/": Run(
        says="0 failed", replace={"tests/dialogues/": "tests/dialogues/ --config {price_config}"}
    ),
    "confab flows replay --flow pizza": Run(
        says="conversation", replace={"next/": "config/flows/", "var/confab.sqlite3": "{store}"}
    ),
    "confab reload --target 127.0.0.1:50051": Run(says="flow versions loaded"),
    'confab shell -c "inspect acme order-7781"': Run(says="order-7781"),
    'confab shell -c "ls --tenant acme --handoff" --json': Run(),
    'confab shell -c "ls --waiting"': Run(says="WAITING ON"),
    "confab shell --target 10.0.0.11:50051 -c hosts": Run(
        says="HOST", replace={"10.0.0.11:50051": "{target}"}
    ),
}
COVERED_ELSEWHERE: dict[str, str] = {
    "confab serve --listen 127.0.0.1:50051 --data-dir ./var": "every test server, test_packaging.py",
    "confab serve --listen 127.0.0.1:50051 --shards 8 --edges": "test_edges.py, two edges on a free port",
    "confab serve --store postgresql://": "test_store_postgres.py, on a PostgreSQL of its own",
    "confab serve --config prod.yaml --tls-cert": "test_tls.py, with certificates of its own",
    "confab shell --target 127.0.0.1:50051": "interactive: test_shell.py drives it in a terminal",
    'confab shell -c "abandon-webhook acme order-7781 price service down"': (
        "test_incidents.py, on a conversation whose webhook hangs"
    ),
    "confab console --target 127.0.0.1:50051": "test_console.py runs it on free ports, in Chromium",
    "confab serve --listen 10.0.0.11:50051": "test_cluster.py, the same flags on network-namespace hosts",
    "confab cluster certs --out certs": "test_data_plane_security.py runs it; test_cluster.py uses its code",
    "confab cluster certs --out var/certs": "the one-machine cluster: test_cluster.py makes its certificates",
    "ip netns exec": "the one-machine cluster: test_cluster.py runs the same on namespace hosts",
    "until ip netns exec": "the one-machine cluster waiting for each host's health",
}


def readme_commands() -> dict[str, str]:
    """Each command in the README's ``sh`` blocks that runs ``confab``: its words (quoted as
    ``shlex.join`` quotes them, to match entries on) -> its text as written, comments dropped."""
    commands = {}
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        pending = ""
        for line in block.splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line)  # the README's comments stand two spaces off
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quote not closed yet: the command goes on
                continue
            if pending.rstrip().endswith("\\"):
                continue
            if _runs_confab(words):
                commands[shlex.join(words)] = pending.strip()
            pending = ""
    return commands


def _runs_confab(words: list[str]) -> bool:
    """``confab`` is the program: first, after a pipe, or what ``ip netns exec NAME`` runs."""
    return any(
        word == "confab" and (i == 0 or words[i - 1] in ("|", "&&") or words[i - 2 : i - 1] == ["exec"])
        for i, word in enumerate(words)
    )


def entry_of(command: str) -> str | None:
    """The longest RUN or COVERED_ELSEWHERE key the command starts with."""
    keys = [key for key in (*RUN, *COVERED_ELSEWHERE) if command.startswith(shlex.join(shlex.split(key)))]
    return max(keys, key=len, default=None)


def variants(command: str) -> list[str]:
    """``[--x]`` written as optional: the command without it, then with it."""
    optional = re.search(r" '?\[([^]]+)\]'?", command)
    if optional is None:
        return [command]
    return [
        command.replace(optional.group(0), ""),
        command.replace(optional.group(0), " " + optional.group(1)),
    ]


def test_every_readme_command_is_run_here_or_covered_by_a_named_test() -> None:
    commands = readme_commands()
    assert commands, "no confab command found in the README's sh blocks"
    unaccounted = [command for command in commands if entry_of(command) is None]
    assert not unaccounted, f"README commands neither run here nor covered elsewhere: {unaccounted}"
    used = {entry_of(command) for command in commands}
    stale = [key for key in (*RUN, *COVERED_ELSEWHERE) if key not in used]
    assert not stale, f"entries for commands the README no longer shows: {stale}"


@pytest.mark.integration
def test_the_key_the_readme_hashes_is_the_one_keys_new_printed() -> None:
    """The README says where ``$KEY`` comes from; following it, ``keys hash`` gives the entry's SHA-256."""
    text = README.read_text(encoding="utf-8")
    assert "`$KEY` is a key `confab keys new` printed" in text
    commands = readme_commands()
    (new_key,) = [c for words, c in commands.items() if words.startswith("confab keys new --tenant")]
    (hash_key,) = [c for words, c in commands.items() if words.endswith("confab keys hash")]
    made = subprocess.run(
        ["bash", "-c", new_key], env=_with_venv(), capture_output=True, text=True, check=True
    )
    lines = made.stdout.splitlines()
    key = lines[next(i for i, line in enumerate(lines) if line.startswith("# API key for")) + 1]
    assert key.startswith("cfb_"), made.stdout
    hashed = subprocess.run(
        ["bash", "-c", hash_key], env={**_with_venv(), "KEY": key}, capture_output=True, text=True, check=True
    )
    assert f"sha256: {hashed.stdout.strip()}" in made.stdout


def _with_venv() -> dict[str, str]:
    """os.environ with this interpreter's ``confab`` first on the PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture
def readme_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", shards=1).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            stub.ProcessMessage(message("order-7781", "hello"), timeout=20)
            stub.ProcessMessage(pizza("order-7782", "a large margherita"), timeout=20)  # one to replay
        yield server
    finally:
        server.stop()


@pytest.mark.integration
def test_every_readme_command_runs_as_written(readme_server: ServerProcess, tmp_path: Path) -> None:
    confab = Path(sys.executable).parent / "confab"
    assert confab.exists(), f"{confab} is missing: the README's commands need the installed `confab`"
    prices = f"127.0.0.1:{free_port()}"
    values = {
        "target": readme_server.address,
        "prices": prices,
        "price_config": str(price_webhook_config(tmp_path / "prices.yaml", f"http://{prices}/price")),
        "store": str(readme_server.data_dir / "confab.sqlite3"),
    }
    env = {**os.environ, "PATH": f"{confab.parent}{os.pathsep}{os.environ['PATH']}", "KEY": KEY}
    commands = [
        (text, RUN[key]) for words, text in readme_commands().items() if (key := entry_of(words)) in RUN
    ]
    commands.sort(key=lambda item: not item[1].background)
    background: list[subprocess.Popen[str]] = []
    try:
        for command, run in commands:
            for variant in variants(command):
                for written, used in run.replace.items():
                    variant = variant.replace(written, used.format(**values))
                variant = re.sub(
                    r"^confab (call|shell)(?! --target)", rf"confab \1 --target {values['target']}", variant
                )
                variant = variant.replace("127.0.0.1:50051", values["target"])
                if run.background:
                    background.append(_start(variant.removesuffix("&").strip(), env, prices))
                    continue
                done = subprocess.run(
                    ["bash", "-c", variant],
                    cwd=REPOSITORY,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, (
                    f"{variant}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
                )
                assert run.says in done.stdout, f"{variant}\nsaid:\n{done.stdout}\n{done.stderr}"
    finally:
        for process in background:
            _stop(process)


def _start(command: str, env: dict[str, str], address: str) -> subprocess.Popen[str]:
    """``command`` in a process group of its own, once it listens on ``address``."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=REPOSITORY, env=env, text=True, start_new_session=True
    )
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return process
        except OSError:
            failed = (
                f"{command} exited {process.returncode}"
                if process.poll() is not None
                else f"{command} never listened on {address}"
                if time.monotonic() > deadline
                else ""
            )
            if failed:
                _stop(process)
                raise AssertionError(failed) from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[str]) -> None:
    """Its whole process group, SIGKILL if SIGTERM is not enough; never hiding a test's failure."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
