"""Every flow a process can run: the built-in ones, the bundled flow files, the configured directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ...config import bundled_path
from . import Flow, builtin_flows
from .interpreter import DeclarativeFlow
from .loader import FlowFileError, load_flow_dirs


def bundled_flow_dir() -> Path:
    return bundled_path("flows")


def load_flows(extra_dirs: Iterable[str | Path] = ()) -> tuple[list[Flow], list[FlowFileError]]:
    """The runnable flows, and the files that could not be loaded (reported, then skipped)."""
    flow_set = load_flow_dirs([bundled_flow_dir(), *(Path(d) for d in extra_dirs)])
    flows: list[Flow] = [*builtin_flows(), *(DeclarativeFlow(d) for d in flow_set.flows)]
    return flows, list(flow_set.errors)
