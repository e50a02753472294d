"""Imports point one way: the folder layout is the architecture, and this test keeps it so.

The rules are import-linter contracts in pyproject.toml (``[tool.importlinter]``, with the
picture of the layers); ``make lint`` runs ``lint-imports`` on them, and so does this test,
in-process, so that ``make test`` fails on a broken layer as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter.adapters.building import GraphBuilder
from importlinter.application.app_config import settings
from importlinter.cli import lint_imports

CONFIG = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _lint() -> int:
    return lint_imports(config_filename=str(CONFIG), no_cache=True, no_logo=True)


def test_every_import_points_down_the_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert _lint() == 0, capsys.readouterr().out


class _WithOneMoreImport(GraphBuilder):
    """The package's real import graph, and one import that is not in its code."""

    def __init__(self, importer: str, imported: str) -> None:
        self.importer, self.imported = importer, imported

    def build(self, *args: Any, **kwargs: Any) -> grimp.ImportGraph:
        graph = super().build(*args, **kwargs)
        assert {self.importer, self.imported} <= graph.modules, "the test names a module that is gone"
        graph.add_import(
            importer=self.importer,
            imported=self.imported,
            line_number=1,
            line_contents=f"import {self.imported}",
        )
        return graph


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("confab.grpc_edge.server", "confab.actors.placement"),  # the edge never sees the shards
        ("confab.grpc_edge.server", "confab.runtime.protocol.codec"),  # nor the protocol's frames
        ("confab.runtime.engine.link", "confab.runtime.store"),  # the engine never sees the store
        ("confab.runtime.protocol.records", "confab.runtime.engine"),  # the protocol: the domain only
        ("confab.runtime.protocol.codec", "confab.protos.admin_pb2"),  # protobuf stays at the edge
        ("confab.runtime.flows.execution.interpreter", "confab.actors.placement"),
        ("confab.actors.placement", "confab.runtime.engine.router"),
        ("confab.actors.cluster", "confab.actors.system.messages"),  # plain objects know no Thespian
        ("confab.actors.data_server", "thespian"),
        ("confab.runtime.model", "confab.runtime.flows"),  # the domain imports only the domain
        ("confab.protos.admin_pb2", "confab"),  # the generated code imports nothing of ours
    ],
)
def test_the_contracts_refuse_a_wrong_import(
    importer: str,
    imported: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The check above would pass on contracts that allow everything: these edges must be refused.
    monkeypatch.setattr(settings, "GRAPH_BUILDER", _WithOneMoreImport(importer, imported))
    assert _lint() == 1
    assert "BROKEN" in capsys.readouterr().out
