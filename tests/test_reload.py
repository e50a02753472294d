"""Reloading a running server's flows: at the pid its serving line prints, or with ``confab reload``."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.support import ServerProcess, free_port, run_confab

pytestmark = pytest.mark.integration  # every test here starts a server or a process

EXAMPLES = Path(__file__).resolve().parent / "dialogues" / "examples" / "flows"
OPERATOR_KEY, ADMIN_KEY = "operator-key-for-tests-0123456789", "admin-key-for-tests-0123456789"


def key_entry(name: str, key: str, tenant: str, role: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"    - {{name: {name}, sha256: {digest}, tenant: '{tenant}', roles: [{role}]}}\n"


def test_the_serving_line_names_the_pid_and_confab_reload_reloads(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    config = tmp_path / "confab.yaml"
    config.write_text(
        f"flows:\n  dirs: [{flows}]\nauth:\n  mode: required\n  api_keys:\n"
        + key_entry("ops", OPERATOR_KEY, "", "operator")
        + key_entry("acme-admin", ADMIN_KEY, "acme", "admin")
    )
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)], log_level="INFO")
    server.start()
    try:
        (serving,) = [line for line in server.output if "serving on" in line]
        pid = re.search(r"\(pid (\d+),", serving)
        assert pid is not None and int(pid.group(1)) == server.pid, serving  # the edge, not an actor

        reload = ("reload", "--target", server.address)
        shutil.copy(EXAMPLES / "survey.yaml", flows)
        done = run_confab(*reload, "--api-key", OPERATOR_KEY)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("ok: ") and "survey@" in done.stdout, done.stdout

        # Runtime-wide: a tenant's admin may not, nor anyone without a credential.
        refused = run_confab(*reload, "--api-key", ADMIN_KEY)
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused.stderr
        refused = run_confab(*reload)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr, refused.stderr
        unreachable = run_confab("reload", "--target", f"127.0.0.1:{free_port()}", "--api-key", OPERATOR_KEY)
        assert unreachable.returncode == 3 and "UNAVAILABLE" in unreachable.stderr, unreachable.stderr

        # SIGHUP at the printed pid does the same.
        shutil.copy(EXAMPLES / "identity.yaml", flows)
        os.kill(int(pid.group(1)), signal.SIGHUP)
        deadline = time.monotonic() + 15
        while not any("flows reloaded" in line and "identity@" in line for line in server.output):
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.1)
    finally:
        server.stop()
    audit = [line for line in server.output if "admin action reload_flows" in line]
    assert len(audit) == 1 and "ops" in audit[0]  # refused calls are no action
