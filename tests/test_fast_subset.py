"""The fast subset stays fast: an unmarked test that starts a process fails (see conftest.py)."""

from __future__ import annotations

import os
import subprocess

import pytest


def test_an_unmarked_test_may_not_start_a_process() -> None:
    with pytest.raises(AssertionError, match=r"starts a process \(subprocess\): mark it"):
        subprocess.run(["true"], check=True)
    with pytest.raises(AssertionError, match=r"starts a process \(os.fork\)"):
        if os.fork() == 0:  # only if the guard failed: the child must not go on running tests
            os._exit(0)


@pytest.mark.integration
def test_an_integration_test_may() -> None:
    assert subprocess.run(["true"], check=True).returncode == 0
