"""Every flow a process can run: the built-in ones, the bundled flow files, the configured directories."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
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


def load_flows(
    extra_dirs: Iterable[str | Path] = (), *, log: logging.Logger | None = None
) -> tuple[list[Flow], list[FlowFileError]]:
    """The runnable flows, and the files that could not be loaded (reported, then skipped).

    With ``log`` (the one process that reports for all, e.g. the server at start), one line
    says which flows loaded, from where, and one line per file skipped for errors; YAML files
    in a flow directory that are not flows are named at debug level only.
    """
    flow_set = load_flow_dirs([bundled_flow_dir(), *(Path(d) for d in extra_dirs)])
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    if log is not None:
        log.info("flows loaded: %s", summary(flows))
        for problem in flow_set.errors:
            log.error("flow file skipped: %s", problem)
        for path in flow_set.skipped:
            log.debug("not a flow file, skipped: %s", path)
    return flows, list(flow_set.errors)


def summary(flows: Sequence[Flow]) -> str:
    """``pizza@3f2a... (config/flows/pizza.yaml), acme/support@7 (...)``: what runs, for logs."""
    parts = []
    for flow in flows:
        tenant = getattr(flow, "tenant", "")
        document = getattr(flow, "document", None)
        source = f" ({document.source})" if isinstance(document, FlowDocument) and document.source else ""
        parts.append(f"{tenant + '/' if tenant else ''}{flow.flow_id}@{flow.version}{source}")
    return ", ".join(parts) or "none"
