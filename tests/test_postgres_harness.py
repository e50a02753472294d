"""The tests' PostgreSQL: where its binaries are missing, a clear skip, or a failure where one is required."""

from __future__ import annotations

from pathlib import Path

import pytest

from confab.tools import postgres_server
from confab.tools.postgres_server import PostgresUnavailable, binaries
from tests import postgres


@pytest.fixture
def no_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(postgres_server, "DEBIAN_BINARIES", tmp_path / "postgresql")
    return tmp_path


def test_missing_binaries_say_where_they_were_looked_for(no_binaries: Path) -> None:
    with pytest.raises(PostgresUnavailable) as missing:
        binaries()
    assert "initdb is not on PATH" in str(missing.value)
    assert str(no_binaries / "postgresql") in str(missing.value)


def test_the_newest_debian_version_is_chosen_when_none_is_on_path(no_binaries: Path) -> None:
    for version in ("9", "15", "13"):
        bin_dir = no_binaries / "postgresql" / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "initdb").touch()
    assert binaries() == no_binaries / "postgresql" / "15" / "bin"


def test_without_binaries_a_test_is_skipped(no_binaries: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server binaries"):
        postgres.start_server()


def test_without_binaries_a_test_fails_where_postgresql_is_required(
    no_binaries: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="CONFAB_REQUIRE_POSTGRES=1"):
        postgres.start_server()
