"""Every flow a process can run: the built-in ones, the bundled flow files, the configured directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ...config import bundled_path
from . import Flow, builtin_flows
from .document import FlowDocument
from .interpreter import DeclarativeFlow
from .loader import FlowFileError, load_flow_dirs


def bundled_flow_dir() -> Path:
    return bundled_path("flows")


def declarative_flows(documents: Iterable[FlowDocument]) -> list[DeclarativeFlow]:
    """One runnable flow per document; flows loaded together can call each other as sub-flows."""
    library: dict[tuple[str, str], DeclarativeFlow] = {}
    for document in documents:
        library[(document.flow_id, document.tenant)] = DeclarativeFlow(document, library)
    return list(library.values())


def load_flows(extra_dirs: Iterable[str | Path] = ()) -> tuple[list[Flow], list[FlowFileError]]:
    """The runnable flows, and the files that could not be loaded (reported, then skipped)."""
    flow_set = load_flow_dirs([bundled_flow_dir(), *(Path(d) for d in extra_dirs)])
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    return flows, list(flow_set.errors)
