"""Imports point one way: the folder layout is the architecture, and this test keeps it so.

    tools (the confab command, the composition root)
      └─► grpc_edge ─► runtime.engine (the engine's client side) ─► runtime.protocol ─┐
      └─► actors (the shards, on Thespian) ─► runtime.protocol, runtime.store, runtime.flows ─┤
                                                          domain: runtime.model, errors, ◄─┘
                                                          config, inspection, ...

A module may import its own layer and the layers this table lets it; nothing else.
The edge never sees the shards, the store or the protocol's frames; the engine's client
side never sees the shards or the store; the protocol knows only the domain.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "confab"

DOMAIN = {
    "confab",  # the package's surface
    "confab.config",  # bundled defaults (package data)
    "confab.runtime",  # VERSION
    "confab.runtime.model",
    "confab.runtime.errors",
    "confab.runtime.config",
    "confab.runtime.inspection",
    "confab.runtime.eventloop",
    "confab.runtime.webhooks",
}
ALLOWED: dict[str, set[str]] = {
    "confab.tools": {"*"},
    "confab.grpc_edge": {"confab.protos", "confab.runtime.engine", "confab.runtime.telemetry", *DOMAIN},
    "confab.actors": {
        "confab.runtime.protocol",
        "confab.runtime.store",
        "confab.runtime.flows",
        "confab.runtime.telemetry",
        *DOMAIN,
    },
    "confab.runtime.engine": {"confab.runtime.protocol", "confab.runtime.telemetry", *DOMAIN},
    "confab.runtime.telemetry": {"confab.runtime.protocol", *DOMAIN},
    "confab.runtime.protocol": DOMAIN,
    "confab.runtime.flows": DOMAIN,
    "confab.runtime.store": DOMAIN,
    "confab.protos": set(),
    **{module: DOMAIN for module in DOMAIN},
}


def layer_of(module: str) -> str:
    """The longest entry of ALLOWED that is ``module`` or one of its packages."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in ALLOWED:
            return candidate
    raise AssertionError(f"{module} belongs to no layer: add it to the table in this test")


def modules() -> dict[str, Path]:
    found = {}
    for directory, _, files in os.walk(PACKAGE, followlinks=True):
        for name in files:
            if name.endswith(".py") and not name.endswith("_pb2.py") and not name.endswith("_pb2_grpc.py"):
                path = Path(directory) / name
                parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                names = [f"{target}.{alias.name}" for alias in node.names]
            else:
                target, names = node.module or "", []
            for candidate in [target, *names]:
                if candidate.startswith("confab"):
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("confab")}
    return found


def test_every_import_points_down_the_layers() -> None:
    found = modules()
    assert len(found) > 50, "the package was not found where the test looks"
    wrong = []
    for module, path in sorted(found.items()):
        own = layer_of(module)
        allowed = ALLOWED[own]
        for target in imports_of(module, path):
            if target not in found and target.rpartition(".")[0] in found:
                target = target.rpartition(".")[0]  # `from pkg import name`: name is not a module
            other = layer_of(target)
            if other != own and "*" not in allowed and other not in allowed:
                wrong.append(f"{module} imports {target} ({own} -> {other})")
    assert wrong == []


def test_the_table_knows_a_wrong_import_when_it_sees_one() -> None:
    # The checks above would pass on an empty table: these edges must be refused.
    assert "confab.actors" not in ALLOWED[layer_of("confab.grpc_edge.server")]
    assert "confab.runtime.store" not in ALLOWED[layer_of("confab.runtime.engine.link")]
    assert "confab.runtime.engine" not in ALLOWED[layer_of("confab.runtime.protocol.records")]
    assert "confab.actors" not in ALLOWED[layer_of("confab.runtime.flows.execution.interpreter")]
