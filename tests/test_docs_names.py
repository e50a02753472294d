"""The prose names what exists: every module path the docs name resolves.

A module path in double backquotes in a docstring of the package (``confab.runtime.errors``,
or a bare ``runtime.errors``, ``actors.shard``, ``grpc_edge.guards``, ``tools.serve``, resolved
against the ``confab`` package), and one in backquotes in README.md and docs/*.md, must be a
module, a package or an attribute of one. A name that is not a module path but spells a name
the package's code uses (a metric, a health service, an entry-point group: a string literal
in the package's source) or a protobuf name (``confab.admin.v1.Admin``) counts as well. The
files and folders README.md and docs/*.md point to (``actors/placement.py``, links) exist.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

import confab.protos

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "confab"
MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The first part of a module path: the package, and its folders named bare.
ROOTS = ("confab", "runtime", "actors", "grpc_edge", "tools", "protos")
DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+"
IN_DOCSTRING = re.compile(rf"``({DOTTED})")
IN_MARKDOWN = re.compile(rf"(?<!`)`+({DOTTED})")
# Paths into the repository that Markdown names: `actors/placement.py`, [text](docs/api.md#part).
FOLDERS = ("actors", "config", "docs", "grpc_edge", "protos", "runtime", "tests", "tools")
PATH_IN_MARKDOWN = re.compile(rf"`((?:{'|'.join(FOLDERS)})/[\w./-]*)`")
LINK = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")

# Named where another branch is at work on the file, which this one leaves as it is: each is
# (file, name) and is fixed there. Listed here, not silently skipped.
ELSEWHERE: set[tuple[str, str]] = set()


def package_sources() -> Iterator[tuple[str, Path]]:
    """(path shown, file) of every Python module of the package but the generated ones."""
    for directory, _, files in os.walk(PACKAGE, followlinks=True):
        for name in sorted(files):
            if name.endswith(".py") and "_pb2" not in name:
                path = Path(directory) / name
                yield path.relative_to(REPO).as_posix(), path


def docstrings(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield text


def named_in_docstrings() -> set[tuple[str, str]]:
    return {
        (shown, name)
        for shown, path in package_sources()
        for text in docstrings(path)
        for name in IN_DOCSTRING.findall(text)
        if name.split(".")[0] in ROOTS
    }


def named_in_markdown() -> set[tuple[str, str]]:
    return {
        (path.relative_to(REPO).as_posix(), name)
        for path in MARKDOWN
        for name in IN_MARKDOWN.findall(path.read_text(encoding="utf-8"))
        if name.split(".")[0] in ROOTS
    }


def resolves(name: str) -> bool:
    """Whether ``name`` (``confab.`` implied when bare) is a module, a package or an attribute of one."""
    dotted = name if name.startswith("confab.") or name == "confab" else f"confab.{name}"
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def strings_of_the_package() -> set[str]:
    """Every string literal in the package's source: the names its code spells."""
    return {
        node.value
        for _, path in package_sources()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def protobuf_names() -> set[str]:
    """Every package, service, method, message and enum the generated modules define."""
    for module in pkgutil.iter_modules(confab.protos.__path__):
        importlib.import_module(f"confab.protos.{module.name}")
    names: set[str] = set()
    pool = descriptor_pool.Default()
    for module in pkgutil.iter_modules(confab.protos.__path__):
        if not module.name.endswith("_pb2"):
            continue
        file = pool.FindFileByName(f"{module.name.removesuffix('_pb2')}.proto")
        names.add(file.package)
        for service in file.services_by_name.values():
            names.add(service.full_name)
            names.update(method.full_name for method in service.methods)
        names.update(message.full_name for message in file.message_types_by_name.values())
        names.update(enum.full_name for enum in file.enum_types_by_name.values())
    return names


def wrong(named: set[tuple[str, str]]) -> list[str]:
    spelled = strings_of_the_package() | protobuf_names()
    return sorted(
        f"{where}: {name}"
        for where, name in named
        if (where, name) not in ELSEWHERE and not resolves(name) and name not in spelled
    )


def test_every_module_path_a_docstring_names_exists() -> None:
    named = named_in_docstrings()
    assert len(named) > 50, "the docstrings were not found where the test looks"
    assert wrong(named) == []


def test_every_module_path_the_readme_and_docs_name_exists() -> None:
    named = named_in_markdown()
    assert len(named) > 5, "the Markdown files were not found where the test looks"
    assert wrong(named) == []


def test_every_file_the_readme_and_docs_point_to_exists() -> None:
    missing = []
    for path in MARKDOWN:
        text = path.read_text(encoding="utf-8")
        for target in PATH_IN_MARKDOWN.findall(text):
            if not (REPO / target).exists():
                missing.append(f"{path.name}: {target}")
        for target in LINK.findall(text):
            if not (path.parent / target).exists():
                missing.append(f"{path.name}: ({target})")
    assert missing == []


@pytest.mark.parametrize(
    "name",
    ["runtime.wire", "actors.coordinator", "grpc_edge.interceptors.ErrorInterceptor", "confab.bridge"],
)
def test_a_name_of_nothing_is_caught(name: str) -> None:
    assert wrong({("here", name)}) == [f"here: {name}"]


@pytest.mark.parametrize(
    "name",
    [
        "runtime.errors",
        "confab.runtime.engine.Engine",
        "actors.system.host.ActorHost",
        "confab.admin.v1.Admin",
    ],
)
def test_a_name_of_something_passes(name: str) -> None:
    assert wrong({("here", name)}) == []
